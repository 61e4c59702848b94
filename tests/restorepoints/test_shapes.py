"""The local Compute endpoint answers in the REST API's shapes (checked against example bodies written
from the API's published examples), and what the client parses from them is what the domain reads."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute.models import RestorePoint

from devhost.compute import RESOURCE_GROUP
from shared.adapters.restore_points import _state
from shared.domain.restore_point import collection_name
from tests.restorepoints.conftest import deliver, task_for, track_until_done

FIXTURES = Path(__file__).parent / "fixtures"


def key_paths(value, prefix: str = "") -> set[str]:
    """Every key path of a JSON document, list items folded into ``[]``."""
    if isinstance(value, dict):
        paths = set()
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else key
            paths |= {path} | key_paths(item, path)
        return paths
    if isinstance(value, list):
        return set().union(*(key_paths(item, f"{prefix}[]") for item in value)) if value else set()
    return set()


@pytest.fixture
def raw(compute):
    """The unmodified client, with a hook that keeps each answer's JSON body as sent."""
    bodies: dict[str, dict] = {}

    def keep(response):
        text = response.http_response.text()
        if text:
            bodies[response.http_request.method + " " + response.http_request.url.split("?")[0]] = json.loads(text)

    client = ComputeManagementClient(compute.credential(), compute.subscription_id,
                                     raw_response_hook=keep, **compute.client_options())
    return client, bodies


def test_a_restore_point_with_its_instance_view_has_the_examples_shape(svc, compute, md_vm, raw):
    """GET restore point ?$expand=instanceView answers with the example's fields and nothing unknown."""
    vm = md_vm()
    task = task_for(svc, vm.name)
    deliver(svc, task)
    track_until_done(svc, task.job_id)
    client, bodies = raw
    client.restore_points.get(RESOURCE_GROUP, collection_name(vm.name), f"{task.job_id}_1", expand="instanceView")
    (body,) = [b for key, b in bodies.items() if key.startswith("GET ")]

    example = json.loads((FIXTURES / "restore_point_instance_view.json").read_text())
    ours, theirs = key_paths(body), key_paths(example)
    extras = {"type", "properties.sourceMetadata.osProfile.linuxConfiguration",
              "properties.sourceMetadata.osProfile.linuxConfiguration.provisionVMAgent"}
    assert ours - theirs <= extras, f"fields the API does not have: {sorted(ours - theirs - extras)}"
    # No disk is excluded here, so only the exclusion list's entries are absent.
    assert theirs - ours <= {"properties.excludeDisks[].id"}, f"fields of the API missing: {sorted(theirs - ours)}"


def test_a_restore_point_collection_has_the_examples_shape(compute, md_vm, raw):
    """PUT restore point collection answers 201 with the example's fields; the client reads its source."""
    vm = md_vm()
    client, bodies = raw
    created = client.restore_point_collections.create_or_update(
        RESOURCE_GROUP, "rpc-shape", {"location": "local", "properties": {"source": {"id": vm.id}}})
    assert created.source.id == vm.id
    (body,) = [b for key, b in bodies.items() if key.startswith("PUT ")]
    example = json.loads((FIXTURES / "restore_point_collection.json").read_text())
    assert key_paths(body) == key_paths(example)


def test_the_domain_reads_the_examples_restore_point_as_the_client_parses_it():
    """The example restore point, parsed by the SDK's model, gives both disks replicated and the mode."""
    example = json.loads((FIXTURES / "restore_point_instance_view.json").read_text())
    state = _state(RestorePoint(example))
    assert state.provisioning_state == "Succeeded" and state.consistency_mode == "ApplicationConsistent"
    assert [(d.disk_id.rsplit("/", 1)[-1], d.replicated, d.completion_percent) for d in state.disks] == [
        ("example-os", True, 100), ("example-data", True, 100)]
    assert state.statuses[0].code == "ReplicationState/succeeded" and state.operation is None
