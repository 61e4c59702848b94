"""The Event Grid option of the status blob trigger: the subscription sends exactly the trigger's
blobs to the trigger's own endpoint, and the app is told the source it is deployed with."""
from __future__ import annotations

import re
from pathlib import Path

import azure.functions as func
import pytest

from tests.infra.bicep import Template, find_property, properties

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"


@pytest.fixture(scope="module")
def status_trigger() -> dict:
    import function_app
    from devhost.host import read_functions

    (spec,) = [s for s in read_functions(function_app.app) if s.trigger_type == "blobTrigger"]
    return {**spec.trigger, "function": spec.name}


@pytest.fixture(scope="module")
def subscription():
    events = Template.load(INFRA / "app" / "status-events.bicep")
    return events, events.declarations("resource")["statusBlobs"]


def test_the_subscription_delivers_the_status_blobs_writes_and_nothing_else(subscription, status_trigger):
    """Each write of a <container>/…/*.Status.txt blob is an event for the trigger; log blobs are not."""
    events, resource = subscription
    event_filter = find_property(resource, "filter")
    types = find_property(event_filter, "includedEventTypes")
    assert [events.literal(t) for t in types.named_children] == ["Microsoft.Storage.BlobCreated"]
    assert find_property(event_filter, "subjectBeginsWith").text.decode() == \
        "'/blobServices/default/containers/${statusContainer}/'"
    suffix = events.literal(find_property(event_filter, "subjectEndsWith"))
    assert status_trigger["path"] == f"%STATUS_CONTAINER%/{{name}}{suffix}"


def test_the_subscription_calls_the_blob_extension_webhook_of_the_status_trigger(subscription, status_trigger):
    """The endpoint is the trigger's webhook with the host's blobs_extension key, for the function main names."""
    _, resource = subscription
    endpoint = find_property(resource, "endpointUrl").text.decode()
    assert "/runtime/webhooks/blobs?functionName=Host.Functions.${functionName}&code=" in endpoint
    assert ".systemKeys.blobs_extension" in endpoint
    main = Template.load(INFRA / "main.bicep")
    module = main.declarations("module")["statusEvents"]
    params = properties(find_property(module, "params"))
    assert main.literal(params["functionName"]) == status_trigger["function"]
    assert params["statusContainer"].text.decode() == "statusContainer"
    assert "statusBlobSource == 'EventGrid' && statusEventSubscription" in module.text.decode()


def test_the_app_is_told_the_source_it_is_deployed_with():
    """STATUS_BLOB_SOURCE is set from main's parameter, whose allowed values are the trigger's sources."""
    main_text = (INFRA / "main.bicep").read_text()
    allowed = re.search(r"@allowed\(\[([^\]]*)\]\)\s*param statusBlobSource string = '(\w+)'", main_text)
    assert allowed is not None
    assert {v.strip(" '") for v in allowed.group(1).split(",")} == {source.value for source in func.BlobSource}
    assert allowed.group(2) == func.BlobSource.LOGS_AND_CONTAINER_SCAN.value
    main = Template.load(INFRA / "main.bicep")
    assert main.module_params("functionApp")["statusBlobSource"].text.decode() == "statusBlobSource"
    assert "{ name: 'STATUS_BLOB_SOURCE', value: statusBlobSource }" in (INFRA / "app" / "function.bicep").read_text()
