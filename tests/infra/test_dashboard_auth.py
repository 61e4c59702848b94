"""App Service authentication in front of the dashboard (infra/app/dashboard-auth.bicep): off unless main's
dashboardAuthClientId is set; on, it makes every request sign in with Entra ID, except the blob trigger's
Event Grid webhook; and the functions still ask for their key (auth level FUNCTION)."""
from __future__ import annotations

import json
from pathlib import Path

from tests.infra.bicep import Template, find_property, properties, value_of

INFRA = Path(__file__).resolve().parents[2] / "infra"


def test_main_turns_it_on_only_with_a_client_id():
    """The module is conditional on dashboardAuthClientId (empty by default); azd takes it from the environment."""
    main = Template.load(INFRA / "main.bicep")
    assert not main.syntax_errors()
    module = main.declarations("module")["dashboardAuth"]
    assert "if (!empty(dashboardAuthClientId))" in module.text.decode()
    assert main.literal(value_of(main.declarations("parameter")["dashboardAuthClientId"])) == ""
    params = properties(find_property(module, "params"))
    assert params["clientId"].text.decode() == "dashboardAuthClientId"
    assert params["appName"].text.decode() == "functionApp.outputs.appName"
    azd = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert azd["dashboardAuthClientId"]["value"] == "${DASHBOARD_AUTH_CLIENT_ID}"


def test_on_it_requires_sign_in_with_entra_id_but_lets_event_grid_reach_the_blob_trigger():
    auth = Template.load(INFRA / "app" / "dashboard-auth.bicep")
    assert not auth.syntax_errors()
    resource = auth.declarations("resource")["auth"]
    assert "'Microsoft.Web/sites/config@" in resource.text.decode()
    assert auth.literal(find_property(resource, "name")) == "authsettingsV2"
    assert auth.literal(find_property(find_property(resource, "platform"), "enabled")) is True
    validation = find_property(resource, "globalValidation")
    assert auth.literal(find_property(validation, "requireAuthentication")) is True
    assert auth.literal(find_property(validation, "unauthenticatedClientAction")) == "RedirectToLoginPage"
    excluded = [auth.literal(n) for n in find_property(validation, "excludedPaths").named_children]
    assert excluded == ["/runtime/webhooks/blobs"]
    provider = find_property(resource, "azureActiveDirectory")
    assert find_property(provider, "clientId").text.decode() == "clientId"
    assert "${tenantId}/v2.0" in find_property(provider, "openIdIssuer").text.decode()


def test_the_status_webhook_path_excluded_is_the_one_event_grid_calls():
    """The path left open is the one status-events.bicep subscribes the trigger at."""
    events = (INFRA / "app" / "status-events.bicep").read_text()
    assert "/runtime/webhooks/blobs?functionName=" in events
