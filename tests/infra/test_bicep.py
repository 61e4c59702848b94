"""The infrastructure templates agree with the code: every setting, every role, the queue's rules."""
from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from shared.domain.command import EXTENSION_WINDOW
from shared.settings import Settings
from tests.infra.bicep import Template, find_property, properties, value_of

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"

# What the code does with its identity, and the built-in role that allows exactly that.
REQUIRED_ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0": "Azure Service Bus Data Receiver",
    "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39": "Azure Service Bus Data Sender",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
    "9980e02c-c2be-4d73-94e8-173b1dc7cf3c": "Virtual Machine Contributor",
}


@pytest.fixture(scope="module")
def main():
    return Template.load(INFRA / "main.bicep")


@pytest.fixture(scope="module")
def function():
    return Template.load(INFRA / "app" / "function.bicep")


@pytest.fixture(scope="module")
def app_settings(main, function) -> dict[str, object]:
    """The Function App's settings by name: the literal value, or, where Azure computes it at
    deployment, a stand-in that is the same for the same expression."""
    module_params = main.module_params("functionApp")

    def resolve(node):
        if node.type == "identifier" and node.text.decode() in module_params:
            return main.literal(module_params[node.text.decode()])     # follow the param into main
        if node.type == "call_expression" and node.named_children[0].text.decode() == "string":
            (argument,) = node.named_children[1].named_children
            value = resolve(argument)
            return None if value is None else str(value)
        return function.literal(node)

    settings = {}
    for entry in _setting_entries(function):
        name, value = function.literal(properties(entry)["name"]), properties(entry)["value"]
        literal = resolve(value)
        settings[name] = literal if literal is not None else _stand_in(name, value.text.decode())
    return settings


@pytest.fixture(scope="module")
def bindings():
    import function_app
    from devhost.host import read_functions

    return [b for spec in read_functions(function_app.app) for b in spec.bindings]


def test_every_template_parses_and_every_module_it_names_exists():
    """Each Bicep file is free of syntax errors, and main.bicep's modules are all there."""
    templates = sorted(INFRA.rglob("*.bicep"))
    assert len(templates) >= 2
    errors = [e for path in templates for e in Template.load(path).syntax_errors()]
    assert errors == []
    missing = [str(p) for p in Template.load(INFRA / "main.bicep").module_paths() if not p.is_file()]
    assert missing == []


def test_a_broken_template_is_reported_with_its_line(tmp_path):
    """The syntax check itself can fail: an unclosed object is found and located."""
    broken = tmp_path / "broken.bicep"
    broken.write_text("param a string\nresource x 'Microsoft.Storage/storageAccounts@2023-05-01' = {\n  name: a\n")
    assert Template.load(broken).syntax_errors()


def test_the_app_has_every_setting_its_bindings_resolve(app_settings, bindings):
    """Each %SETTING% and each connection a trigger names is set, connections through an identity."""
    for binding in bindings:
        for name in re.findall(r"%([^%]+)%", str(binding)):
            assert name in app_settings, f"{name} is used by a binding but not set by infra"
        if "connection" in binding:
            prefix = binding["connection"] + "__"
            assert binding["connection"] not in app_settings, "a connection string where an identity should be"
            assert app_settings.get(prefix + "credential") == "managedidentity"
            assert any(n.startswith(prefix) and n.endswith(("Uri", "Namespace")) for n in app_settings)
    assert app_settings["AzureWebJobsStorage__credential"] == "managedidentity"


def test_the_deployed_settings_start_the_app_on_its_identity_with_the_arm_dispatcher(app_settings, main):
    """Settings read from exactly what infra sets: identity endpoints, arm, the schedules of main."""
    env = {name: str(value) for name, value in app_settings.items()}
    settings = Settings.from_env(env)
    assert settings.dispatcher == "arm" and settings.subscription_id
    assert settings.storage.uses_identity and settings.service_bus.uses_identity
    assert settings.storage.client_id == settings.service_bus.client_id == env["BackupStorage__clientId"]
    settings.storage.endpoint("blobServiceUri"), settings.storage.endpoint("tableServiceUri")
    settings.service_bus.endpoint("fullyQualifiedNamespace")
    defaults = {name: main.literal(value_of(node)) for name, node in main.declarations("parameter").items()}
    assert (settings.schedule, settings.sweep_schedule) == (defaults["snapshotSchedule"], defaults["sweepSchedule"])
    assert settings.catch_up == timedelta(hours=defaults["scheduleCatchUpHours"])
    assert (settings.retention_schedule, settings.status_blob_retention, settings.snapshot_limit) == (
        Settings.retention_schedule, timedelta(days=7), Settings.snapshot_limit)
    assert settings.tasks_queue == main.literal(value_of(main.declarations("variable")["tasksQueue"]))


def test_no_key_or_connection_string_in_settings_but_the_content_share(function):
    """Only Elastic Premium's content share carries a key; everything else goes by identity."""
    keyed = [function.literal(properties(entry)["name"])
             for entry in _setting_entries(function)
             if "listKeys" in entry.text.decode() or "AccountKey" in entry.text.decode()]
    assert keyed == ["WEBSITE_CONTENTAZUREFILECONNECTIONSTRING"]
    storage = (INFRA / "app" / "storage.bicep").read_text()
    backup = storage[storage.index("resource backupAccount"):storage.index("resource backupBlobs")]
    assert "allowSharedKeyAccess: false" in backup
    assert "disableLocalAuth: true" in (INFRA / "app" / "servicebus.bicep").read_text()


def test_the_identity_holds_each_role_the_code_needs_and_no_other():
    """Storage, Service Bus, telemetry and the VMs' extension: each role granted, none broader."""
    granted = set()
    for path in (INFRA / "app").glob("*.bicep"):
        granted |= Template.load(path).assigned_roles()
    assert {REQUIRED_ROLES.get(g, g) for g in granted} == set(REQUIRED_ROLES.values())


def test_the_restore_point_role_lets_an_original_location_restore_snapshot_swap_and_poll_disks():
    """The custom role of vm-access.bicep grants what replacing a managed-disk VM's disks calls: the VM
    written (its storage profile), disk snapshots made, read and removed, and disk/snapshot operations read."""
    text = (INFRA / "app" / "vm-access.bicep").read_text()
    role = text[text.index("resource restorePointRole"):text.index("resource restorePoints ")]
    actions = set(re.findall(r"'(Microsoft\.[^']+)'", role))
    assert {"Microsoft.Compute/virtualMachines/write", "Microsoft.Compute/snapshots/read",
            "Microsoft.Compute/snapshots/write", "Microsoft.Compute/snapshots/delete",
            "Microsoft.Compute/locations/diskOperations/read"} <= actions
    assert not any(a.endswith("/*") or a == "*" for a in actions)


def test_the_queue_drops_a_resent_task_for_as_long_as_the_extension_would_run_it():
    """Duplicate detection is on and its window outlasts the extension's 140-minute command window."""
    template = Template.load(INFRA / "app" / "servicebus.bicep")
    queue = properties(find_property(template.declarations("resource")["queue"], "properties"))
    assert template.literal(queue["requiresDuplicateDetection"]) is True
    assert _iso_duration(template.literal(queue["duplicateDetectionHistoryTimeWindow"])) > EXTENSION_WINDOW
    assert template.literal(queue["maxDeliveryCount"]) >= 3


def _setting_entries(function: Template):
    return [n for n in find_property(function.root, "appSettings").named_children if n.type == "object"]


def _stand_in(name: str, expression: str) -> str:
    """A plausible value for a setting Azure computes at deployment (an endpoint, an id)."""
    if name.endswith("ServiceUri"):
        kind = name.split("__")[1].removesuffix("ServiceUri")
        return f"https://stvmsnapb.{kind}.core.windows.net/"
    if name.endswith("fullyQualifiedNamespace"):
        return "sb-vmsnap.servicebus.windows.net"
    return f"<{expression}>"


def _iso_duration(text: str) -> timedelta:
    match = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?", text)
    assert match, f"not an ISO 8601 duration: {text}"
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
