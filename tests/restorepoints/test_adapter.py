"""The restore point adapter against ARM's answers as the Compute API specification gives them (a
scripted transport under the unmodified client): what it sends, and how it reads a conflict."""
from __future__ import annotations

import pytest

from shared.adapters.restore_points import ComputeRestorePoints
from shared.domain.jobs import Consistency
from shared.ports import RestorePointRefused
from tests.restorepoints.arm_script import GROUP, VM_ID, ScriptedArm, StaticCredential, arm_error, restore_point_body

POINT = f"{GROUP}/restorePointCollections/vmsnap-vm1/restorePoints/job1_1"
COLLECTION = f"{GROUP}/restorePointCollections/vmsnap-vm1"


def adapter(script) -> tuple[ComputeRestorePoints, ScriptedArm]:
    transport = ScriptedArm(script)
    return ComputeRestorePoints(StaticCredential(), transport=transport, retry_total=0), transport


def test_a_conflict_on_create_adopts_the_restore_point_of_that_name_whatever_arm_says():
    """Two deliveries racing: ours gets ARM's 409 OperationNotAllowed ("Restore point 'x' already
    exists."), reads the restore point by name and carries on with it instead of failing the attempt."""
    compute, transport = adapter({
        ("GET", POINT): [(404, arm_error("NotFound", "The Resource was not found."), {}),
                         (200, restore_point_body("job1_1"), {})],
        ("PUT", POINT): [(409, arm_error("OperationNotAllowed", "Restore point 'job1_1' already exists."), {})],
    })
    state = compute.begin_create(VM_ID, "job1_1", consistency=Consistency.APPLICATION)
    assert (state.name, state.provisioning_state) == ("job1_1", "Creating")
    assert [r.method for r in transport.requests] == ["GET", "PUT", "GET"]


def test_a_conflict_with_no_restore_point_of_that_name_is_a_refusal_with_arms_code():
    """A 409 that is not about our restore point (nothing of that name exists) is ARM's refusal, kept
    with its code for the job."""
    compute, _ = adapter({
        ("PUT", POINT): [(409, arm_error("SomethingElse", "Some other conflict."), {})],
    })
    with pytest.raises(RestorePointRefused) as refused:
        compute.begin_create(VM_ID, "job1_1", consistency=Consistency.APPLICATION)
    assert (refused.value.arm_code, refused.value.status) == ("SomethingElse", 409)


@pytest.mark.parametrize("consistency, sent", [
    (Consistency.APPLICATION, None),                  # the default: the field is left out
    (Consistency.CRASH, "CrashConsistent"),           # the only value the spec accepts as input
])
def test_the_create_body_asks_for_crash_consistency_only_when_the_policy_does(consistency, sent):
    """Application consistency is what Azure does when consistencyMode is absent; only CrashConsistent
    is sent, and only when the policy asks for it."""
    compute, transport = adapter({
        ("PUT", POINT): [(201, restore_point_body("job1_1"), {"Location": f"https://management.azure.com"
                                                                          f"/op/1", "Retry-After": "10"})],
    })
    compute.begin_create(VM_ID, "job1_1", consistency=consistency, exclude_disk_ids=[f"{GROUP}/disks/scratch"])
    (body,) = transport.bodies("PUT", "/restorePoints/job1_1")
    assert body["properties"].get("consistencyMode") == sent
    assert body["properties"]["excludeDisks"] == [{"id": f"{GROUP}/disks/scratch"}]


BASE_ENV = {"BackupStorage": "UseDevelopmentStorage=true",
            "ServiceBusConnection": "Endpoint=sb://127.0.0.1:1;SharedAccessKeyName=x;SharedAccessKey=y;"}


@pytest.mark.parametrize("value", ["https://127.0.0.1:8443", "Endpoint=http://127.0.0.1:8443;CertificateFile=c;Token=t",
                                   "Endpoint=https://127.0.0.1:8443;Token=t"])
def test_a_malformed_compute_connection_is_refused_at_start_up_naming_the_setting(value):
    """ComputeConnection that is not Endpoint=https://...;CertificateFile=...;Token=... stops the app (and
    vmsnap) before any call, with one line that names the setting and its form."""
    from shared.errors import ConfigurationError
    from shared.settings import Settings

    with pytest.raises(ConfigurationError) as refused:
        Settings.from_env({**BASE_ENV, "ComputeConnection": value})
    assert "ComputeConnection" in str(refused.value) and "CertificateFile" in str(refused.value)
    assert "\n" not in str(refused.value)


def test_the_compute_connection_points_the_adapter_at_its_endpoint_with_its_token(tmp_path):
    """A ComputeConnection gives the client its URL, trusts exactly its certificate and sends its token;
    unset, restore points go to Azure Resource Manager."""
    from shared.bootstrap import Services
    from shared.errors import ConfigurationError
    from shared.settings import Settings

    certificate = tmp_path / "endpoint.pem"
    certificate.write_text("not checked here")
    value = f"Endpoint=https://127.0.0.1:8443/;CertificateFile={certificate};Token=secret-ish"
    adapter = Services(Settings.from_env({**BASE_ENV, "ComputeConnection": value})).restore_points
    assert adapter.endpoint == "the Compute endpoint https://127.0.0.1:8443 (setting ComputeConnection)"
    assert adapter._options["connection_verify"] == str(certificate)
    assert adapter._credential.get_token("scope").token == "secret-ish"
    assert Services(Settings.from_env(BASE_ENV)).restore_points.endpoint.startswith("Azure Resource Manager")
    certificate.unlink()
    with pytest.raises(ConfigurationError, match="does not exist: start the local stack"):
        Services(Settings.from_env({**BASE_ENV, "ComputeConnection": value})).restore_points
