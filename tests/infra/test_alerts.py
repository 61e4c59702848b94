"""The templates alert on the app itself and make `azd up` whole: an action group (e-mail and webhook, in the
common alert schema), rules for failed backups, the app failing and dead-lettered tasks, each sending to it;
main.parameters.json passes the protected VMs' resource groups and the alert receivers from azd's
environment, and the README says which variables those are."""
from __future__ import annotations

import json
import re
from pathlib import Path

from tests.infra.bicep import Template, find_property, properties

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"


def alerts() -> Template:
    return Template.load(INFRA / "app" / "alerts.bicep")


def test_the_action_group_mails_and_calls_the_webhook_in_the_common_alert_schema():
    """Each receiver kind is there and uses the common alert schema."""
    group = alerts().declarations("resource")["actionGroup"]
    assert "Microsoft.Insights/actionGroups@" in group.text.decode()
    for receivers in ("emailReceivers", "webhookReceivers"):
        text = find_property(group, receivers).text.decode()
        assert "useCommonAlertSchema: true" in text, receivers


def test_three_rules_watch_failed_backups_the_app_and_dead_letters_and_notify_the_group():
    """Failed backups (the app's metric), failed invocations, and the task queue's dead letters: each rule
    is enabled and sends to the action group."""
    resources = alerts().declarations("resource")
    rules = {name: node.text.decode() for name, node in resources.items() if name != "actionGroup"
             and ("scheduledQueryRules@" in node.text.decode() or "metricAlerts@" in node.text.decode())}
    assert set(rules) == {"failedBackups", "appFailures", "deadLettered"}
    assert "vmsnap.jobs" in rules["failedBackups"] and '"Failed"' in rules["failedBackups"]
    assert "success == false" in rules["appFailures"]
    assert "DeadletteredMessages" in rules["deadLettered"] and "tasksQueue" in rules["deadLettered"]
    for name, text in rules.items():
        assert "actionGroup.id" in text and "enabled: true" in text, name


def test_main_wires_the_alerts_module_with_the_app_insights_and_namespace_it_watches():
    """main.bicep passes the monitoring and Service Bus outputs, the queue and the receivers."""
    params = Template.load(INFRA / "main.bicep").module_params("alerts")
    assert params["appInsightsName"].text.decode() == "monitoring.outputs.appInsightsName"
    assert params["serviceBusNamespaceName"].text.decode() == "serviceBus.outputs.namespaceName"
    assert {"emails", "webhookUrl", "tasksQueue"} <= set(params)


def test_azd_parameters_pass_the_vm_resource_groups_and_alert_receivers_from_the_environment():
    """`azd up` grants the app its roles on the VMs' resource groups and sets the receivers: each parameter
    main.parameters.json names exists in main.bicep, and the environment variables are in the README."""
    main = Template.load(INFRA / "main.bicep")
    declared = set(main.declarations("parameter"))
    passed = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert set(passed) <= declared
    variables = {name: re.fullmatch(r"\$\{([A-Z_]+)\}", str(p["value"])) for name, p in passed.items()}
    assert variables["protectedVmResourceGroupList"].group(1) == "AZURE_PROTECTED_VM_RESOURCE_GROUPS"
    assert "vmResourceGroups" in main.declarations("module")["vmAccess"].text.decode()
    readme = (ROOT / "README.md").read_text()
    for name in ("protectedVmResourceGroupList", "alertEmails", "alertWebhookUrl"):
        assert variables[name] and f"azd env set {variables[name].group(1)}" in readme, name


def test_the_webhook_url_is_a_secure_parameter_all_the_way():
    """A Logic App URL carries its signature: it is @secure() wherever it is a parameter."""
    for path, name in ((INFRA / "main.bicep", "alertWebhookUrl"), (INFRA / "app" / "alerts.bicep", "webhookUrl"),
                       (INFRA / "app" / "function.bicep", "alertWebhookUrl")):
        assert name in Template.load(path).declarations("parameter"), path.name
        decorated = re.search(rf"@secure\(\)\s*(?:@description\([^\n]*\)\s*)?param {name} ", path.read_text())
        assert decorated, f"{name} in {path.name} is not @secure()"
