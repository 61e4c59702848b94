"""How results reach the service: the status blob's exact text, the file form, the log blob, secrets."""
from __future__ import annotations

import json
import re

from extension.layout import HandlerEnvironment
from extension.settings import decode_object_str
from tests.extension.conftest import RecordingTransport, message_of, signatures


def test_status_blob_text_has_the_real_handlers_shape(vm):
    """The raw blob text uses "\\/Date(ms)\\/", string codes, and a JSON string as message."""
    vm.run()

    text = vm.text("status.txt")
    assert re.search(r'"timestampUTC": "\\/Date\((\d+)\)\\/"', text)
    (element,) = json.loads(text)
    assert element["version"] == "1.0"
    assert element["timestampUTC"] == f"/Date({int(vm.clock.now().timestamp() * 1000)})/"
    status = element["status"]
    assert status["name"] == "Microsoft.Azure.RecoveryServices.VMSnapshotLinux"
    assert status["operation"] == "Enable" and status["substatus"] == []
    assert isinstance(status["code"], str)
    assert isinstance(status["formattedMessage"]["message"], str)
    assert set(message_of(element)) == {"messageStr", "snapshotConsistency", "jobMessage", "isSizeComputationFailed"}
    assert set(status["snapshotInfo"][0]) == {
        "isSuccessful", "snapshotUri", "errorMessage", "blobUri", "directDriveSnapshotIdentifier",
    }
    assert set(status["storageDetails"]) == {
        "partitionCount", "totalUsedSizeInBytes", "isStoragespacePresent", "isSizeComputationFailed",
    }
    assert all(set(item) == {"Value", "Key"} for item in status["telemetryData"])
    assert status["taskId"].endswith("_1") and status["commandStartTimeUTCTicks"].isdigit()
    assert status["uniqueMachineId"]


def test_the_service_sees_code_4_before_the_final_status(vm):
    """The status blob is written twice: "Transitioning state in extension" (code 4), then the result."""
    http = RecordingTransport()

    vm.run(http=http)

    first, *_, last = http.status_writes()
    assert (first["status"]["status"], first["status"]["code"]) == ("success", "4")
    assert message_of(first)["messageStr"] == "Transitioning state in extension"
    assert first["status"]["snapshotInfo"] is None
    assert last["status"]["code"] == "1"
    assert http.calls[0][0] == "GET"  # the blob is read before it is first written


def test_the_local_status_file_carries_the_blob_json_in_substatus(vm):
    """status/<seq>.status says success for a V2 VM even on failure; the truth is in substatus[0].name."""
    element = vm.run(settings=vm.settings(disks=["os.vhd", "gone.vhd"]))

    (outer,) = vm.status_file(0)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", outer["timestampUTC"])
    status = outer["status"]
    assert (status["status"], status["code"]) == ("success", "76")
    assert status["telemetryData"] is None and status["snapshotInfo"] is None and status["vmHealthInfo"] is None
    (sub,) = status["substatus"]
    assert (sub["code"], sub["status"], sub["formattedMessage"]) == ("0", "success", None)
    assert json.loads(sub["name"])[0] == element
    assert element["status"]["status"] == "error"


def test_a_classic_vm_file_status_mirrors_the_real_result(vm):
    """For microsoft.classiccompute VMs the file status word is not forced to success."""
    vm.run(settings=vm.settings(disks=["gone.vhd"], vmType="microsoft.classiccompute/virtualmachines"))

    assert vm.status_file(0)[0]["status"]["status"] == "error"


def test_a_non_empty_status_blob_is_never_overwritten(vm):
    """A block blob left over from an earlier attempt is refused; the file status says so."""
    vm.container.get_blob_client("status.txt").upload_blob(b"old result", overwrite=True)

    element = vm.run()

    assert vm.text("status.txt") == "old result"
    assert element["status"]["code"] == "1"
    message = json.loads(vm.status_file(0)[0]["status"]["formattedMessage"]["message"])["messageStr"]
    assert "statusBlobUploadError=true" in message
    assert "Cannot perform write operation on a non empty blob" in vm.text("log.txt")


def test_page_blob_status_and_log_are_padded_and_readable(vm):
    """Status and log blobs may be page blobs: the text is padded to 512 and parses after stripping."""
    for name in ("status.txt", "log.txt"):
        blob = vm.container.get_blob_client(name)
        blob.delete_blob()
        blob.create_page_blob(size=512)

    element = vm.run()

    raw = vm.container.get_blob_client("status.txt").download_blob().readall()
    assert len(raw) % 512 == 0
    assert json.loads(raw.decode().rstrip("\0 "))[0] == element
    assert "status blob written: code 1" in vm.text("log.txt")


def test_the_log_blob_holds_the_run_log(vm):
    """The log blob is plain text, "<utc>  <Level>  <message> " per line, the final status last."""
    vm.run()

    lines = vm.text("log.txt").split("Tail of shell script log:")[0].splitlines()
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+  Info  daemon: sequence 0 $", lines[0])
    assert any("snapshot taken" in line for line in lines)
    assert '"code": "1"' in lines[-1]


def test_public_status_and_log_uris_win_over_protected_ones(vm):
    """statusBlobUri in the public settings is used first, as the real handler does."""
    vm.container.get_blob_client("status-public.txt").upload_blob(b"")
    public, protected = vm.settings(statusBlobUri=vm.sas("status-public.txt"))

    vm.run(settings=(public, protected))

    assert json.loads(vm.text("status-public.txt"))[0]["status"]["code"] == "1"
    assert vm.text("status.txt") == ""


def test_no_sas_signature_or_protected_setting_is_written_anywhere(vm):
    """Logs, status files and the scrubbed settings file never contain a SAS signature."""
    public, protected = vm.settings(disks=["os.vhd", "gone.vhd"])
    disk_sas = decode_object_str(protected["objectStr"], "protected")["blobSASUri"]
    secrets = [
        sig
        for url in (protected["statusBlobUri"], protected["logsBlobUri"], *disk_sas)
        for sig in signatures(url)
    ]
    protected_object = protected["objectStr"]

    vm.run(settings=(public, protected))

    env = HandlerEnvironment.load(vm.root)
    settings_doc = json.loads(env.settings_file(0).read_text())
    assert "protectedSettings" not in settings_doc["runtimeSettings"][0]["handlerSettings"]
    log_blob = vm.text("log.txt")
    assert "sig=REDACTED" in log_blob
    written = [log_blob, vm.text("status.txt")] + [
        p.read_text() for p in vm.root.rglob("*") if p.is_file()
    ]
    for text in written:
        assert protected_object not in text
        for secret in secrets:
            assert secret not in text
