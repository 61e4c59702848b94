# Over 400 lines on purpose: data, not logic: the whole code catalogue, audited against error-codes.md.
"""What to do about a failure: every extension code and health code, and every error the service raises
itself, mapped to a service error code, a title, the likely cause, recommended actions and whether a
retry can help. Data, not logic, built from the extension's error table and the Azure Backup
troubleshooting guides (docs/error-codes.md lists the catalogue and its sources), and, for restore
points, the "Troubleshoot restore point failures" and restore point support pages.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Remediation:
    error_code: str                 # service error code, as Azure Backup names it where it has a name
    title: str
    cause: str
    recommendations: tuple[str, ...]
    retryable: bool
    extension_name: str = ""        # the extension's own enum name, for codes that come from the VM


_AGENT = ("Make sure the VM is running and its Linux agent (waagent) is Ready: "
          "'systemctl restart walinuxagent' (or 'waagent') and check every extension shows provisioning succeeded.")
_AGENT_CONF = "In /etc/waagent.conf set Extensions.Enable=y and Provisioning.Agent=auto; keep DHCP enabled in the guest."
_NETWORK = ("Allow outbound HTTPS from the VM to the storage account (service tag Storage, or through the proxy) "
            "and to 168.63.129.16 on ports 80, 443 and 32526.")
_RETRY = "Retry the backup; it is likely to succeed on the next attempt."
_REINSTALL = "Uninstall the VMSnapshotLinux extension from the VM; the next backup reinstalls it."
_SCRIPT_LOGS = "Read the pre/post script output in the extension log (the job's log blob) and fix the script."
_PERMS = "The file must be owned by root with no group or other permissions (mode 600 for configs, 700 for scripts)."
_FREEZE = ("Unmount, fsck and remount the file systems that fail to freeze; list mount points that need not be frozen "
           "in MountsToSkip, or raise SafeFreezeWaitInSeconds, in /etc/azure/vmbackup.conf; remove duplicate mount entries.")


def _r(error_code: str, title: str, cause: str, recommendations: Sequence[str], retryable: bool,
       name: str = "") -> Remediation:
    return Remediation(error_code, title, cause, tuple(recommendations), retryable, name)


_SUCCESS = ("No action needed.",)

EXTENSION_CODES: dict[int, Remediation] = {
    0: _r("Success", "Application-consistent snapshot taken",
          "Pre/post scripts (or the workload hooks) and the snapshot succeeded.", _SUCCESS, False,
          "success_appconsistent"),
    1: _r("Success", "File-system-consistent snapshot taken",
          "The file systems were frozen and every disk was snapshotted.", _SUCCESS, False, "success"),
    2: _r("BackUpOperationFailed", "Internal error in the snapshot extension",
          "The extension failed with an unexpected error (an exception, an inconsistent thaw, or all disks "
          "missing on the guest path).",
          (_RETRY, "If it keeps failing, read the job's log blob and check the agent: " + _AGENT), True, "error"),
    3: _r("ExtensionTaskAlreadyProcessed", "The extension already processed this task",
          "The command repeated a taskId the extension had already seen, so it did nothing.",
          ("Dispatch a new attempt: every attempt needs a new taskId and sequence number.",), True,
          "SuccessAlreadyProcessedInput"),
    4: _r("ExtensionTempTerminalState", "Snapshot in progress",
          "The extension reported that the snapshot is still running.",
          ("Wait for the job to finish; it times out 140 minutes after the command was issued.",), False,
          "ExtensionTempTerminalState"),
    11: _r("UserErrorExtensionInvalidInput", "The snapshot command was not understood",
           "The command or its backupMetadata was missing or malformed.",
           ("This is a defect in the service's command; report it with the job id. Retrying the same command "
            "does not help.",), False, "error_parameter"),
    12: _r("BackUpOperationFailed", "The extension could not find a file it needs",
           "The extension hit a 'no such file' error while enabling.",
           (_RETRY, _REINSTALL), True, "error_12"),
    13: _r("BackUpOperationFailed", "Unexpected extension code 13",
           "The extension reported a code it defines but never raises (error_wrong_time).",
           (_RETRY,), True, "error_wrong_time"),
    14: _r("ExtensionTaskAlreadyProcessed", "Unexpected extension code 14",
           "The extension reported a code it defines but never raises (error_same_taskid).",
           ("Dispatch a new attempt with a new taskId.",), True, "error_same_taskid"),
    15: _r("BackUpOperationFailed", "HTTP failure inside the extension",
           "An HTTP call made by the extension failed.",
           (_RETRY, _NETWORK), True, "error_http_failure"),
    16: _r("UserErrorGuestAgentStatusUnavailable", "The extension could not read its protected settings",
           "The certificate needed to decrypt the protected settings was not found on the VM.",
           (_AGENT, "Retry after the agent has refreshed its certificates."), True,
           "FailedHandlerGuestAgentCertificateNotFound"),
    17: _r("UserErrorInvalidDataDiskLunList", "Invalid list of disks to back up",
           "Disks were excluded but the list of included data disks is empty while host-only disks are present.",
           ("Include at least one data disk, or stop excluding disks.",), False, "FailedInvalidDataDiskLunList"),
    76: _r("ExtensionSnapshotFailedNoNetwork", "Snapshot failed: the VM could not reach storage",
           "Disk snapshot requests failed: the VM could not reach storage, or storage refused the disk blob or "
           "its SAS (all disks, unless the health code is 761).",
           (_NETWORK, "Check the per-disk errors below: AuthenticationFailed means the SAS was refused.", _RETRY),
           True, "FailedRetryableSnapshotFailedNoNetwork"),
    85: _r("ExtensionFailedSnapshotLimitReachedError", "Snapshot limit reached for some disks",
           "Storage refused the snapshot: the disk blob has reached its snapshot count limit.",
           ("Delete blob snapshots you no longer need (never the base blobs).",
            "Shorten the soft-delete retention of the storage account.",
            "With Azure Site Recovery on the same VM, set isanysnapshotfailed=false and stagger the schedules."),
           False, "FailedSnapshotLimitReached"),
    121: _r("UserErrorFsFreezeFailed", "Failed to freeze one or more mount points",
            "FIFREEZE failed, another process held the freeze lock, or the freeze helper failed.",
            (_FREEZE, _RETRY), True, "FailedRetryableFsFreezeFailed"),
    122: _r("UserErrorFsFreezeFailed", "Freezing the file systems timed out",
            "No 'frozen' signal came back within SafeFreezeWaitInSeconds.",
            (_FREEZE, "Back up when the VM is less busy.", _RETRY), True, "FailedRetryableFsFreezeTimeout"),
    123: _r("UserErrorUnableToOpenMount", "A mount point could not be opened",
            "The freeze helper could not open one of the mount points.",
            ("Make every ext3/ext4/xfs/btrfs mount point accessible, or list it in MountsToSkip in "
             "/etc/azure/vmbackup.conf.", _RETRY), True, "FailedRetryableUnableToOpenMount"),
    124: _r("ExtensionOperationFailedForManagedDisks", "The extension's freeze helper is missing",
            "The bundled safefreeze binary is not on the VM.",
            (_REINSTALL,), False, "FailedSafeFreezeBinaryNotFound"),
    173: _r("ExtensionSnapshotRateExceeded", "Storage snapshot rate limit reached",
            "Storage refused the snapshot because too many snapshot calls were made to the blob.",
            ("Stagger backups of VMs that share a storage account.", _RETRY), True,
            "FailedRetryableSnapshotRateExceeded"),
    300: _r("UserErrorPreScriptExecutionFailed", "The pre-script failed",
            "The application pre-script exited with a non-zero code.", (_SCRIPT_LOGS,), False,
            "FailedPrepostPreScriptFailed"),
    301: _r("UserErrorPostScriptExecutionFailed", "The post-script failed",
            "The application post-script exited with a non-zero code.", (_SCRIPT_LOGS,), False,
            "FailedPrepostPostScriptFailed"),
    302: _r("UserErrorPreScriptNotFound", "The pre-script was not found",
            "preScriptLocation in VMSnapshotScriptPluginConfig.json names a file that does not exist.",
            ("Fix preScriptLocation in /etc/azure/VMSnapshotScriptPluginConfig.json.",), False,
            "FailedPrepostPreScriptNotFound"),
    303: _r("UserErrorPostScriptNotFound", "The post-script was not found",
            "postScriptLocation in VMSnapshotScriptPluginConfig.json names a file that does not exist.",
            ("Fix postScriptLocation in /etc/azure/VMSnapshotScriptPluginConfig.json.",), False,
            "FailedPrepostPostScriptNotFound"),
    304: _r("UserErrorIncorrectPluginhostFile", "The plugin host configuration is invalid",
            "VMSnapshotPluginHost.conf could not be parsed; the backup was file-system consistent.",
            (_REINSTALL, "Or fix /etc/azure/VMSnapshotPluginHost.conf."), False,
            "FailedPrepostPluginhostConfigParsing"),
    305: _r("UserErrorIncorrectJSONConfigFile", "The script plugin configuration is invalid",
            "VMSnapshotScriptPluginConfig.json is not valid JSON or lacks required keys.",
            ("Download the template again and fix /etc/azure/VMSnapshotScriptPluginConfig.json.",), False,
            "FailedPrepostPluginConfigParsing"),
    306: _r("UserErrorInsufficientPermissionforPreScript", "The pre-script has unsafe permissions",
            "The pre-script is not owned by root or is accessible to group/others.", (_PERMS,), False,
            "FailedPrepostPreScriptPermissionError"),
    307: _r("UserErrorInsufficientPermissionforPostScript", "The post-script has unsafe permissions",
            "The post-script is not owned by root or is accessible to group/others.", (_PERMS,), False,
            "FailedPrepostPostScriptPermissionError"),
    308: _r("UserErrorPreScriptTimeout", "The pre-script timed out",
            "The pre-script ran longer than timeoutInSeconds.",
            ("Make the script faster or raise timeoutInSeconds in VMSnapshotScriptPluginConfig.json (max 1800).",),
            True, "FailedPrepostPreScriptTimeout"),
    309: _r("UserErrorPostScriptTimeout", "The post-script timed out",
            "The post-script ran longer than timeoutInSeconds.",
            ("Make the script faster or raise timeoutInSeconds in VMSnapshotScriptPluginConfig.json (max 1800).",),
            True, "FailedPrepostPostScriptTimeout"),
    310: _r("UserErrorPreScriptTimeout", "The plugin host timed out waiting for pre-scripts",
            "The plugin host's overall wait for the pre-scripts expired.",
            ("Raise timeoutInSeconds in /etc/azure/VMSnapshotPluginHost.conf (max 1800) or speed up the scripts.",),
            True, "FailedPrepostPluginhostPreTimeout"),
    311: _r("UserErrorPostScriptTimeout", "The plugin host timed out waiting for post-scripts",
            "The plugin host's overall wait for the post-scripts expired.",
            ("Raise timeoutInSeconds in /etc/azure/VMSnapshotPluginHost.conf (max 1800) or speed up the scripts.",),
            True, "FailedPrepostPluginhostPostTimeout"),
    312: _r("UserErrorPrePostChecksumMismatch", "Script checksum mismatch",
            "The extension reported a script checksum mismatch.", (_SCRIPT_LOGS,), False,
            "FailedPrepostCheckSumMismatch"),
    313: _r("UserErrorIncorrectPluginhostFile", "Application consistency is not configured",
            "No plugin host configuration was found, so no scripts ran.",
            ("Nothing to do for file-system-consistent backups; to get application consistency, reinstall the "
             "extension so it restores VMSnapshotPluginHost.conf.",), False,
            "FailedPrepostPluginhostConfigNotFound"),
    314: _r("UserErrorInsufficientPermissionforPluginhostFile", "The plugin host configuration has unsafe permissions",
            "VMSnapshotPluginHost.conf is not owned by root or is writable by group/others.", (_PERMS,), False,
            "FailedPrepostPluginhostConfigPermissionError"),
    315: _r("UserErrorInsufficientPermissionforPluginhostFile", "The plugin host configuration has the wrong owner",
            "VMSnapshotPluginHost.conf is not owned by root.", (_PERMS,), False,
            "FailedPrepostPluginhostConfigOwnershipError"),
    316: _r("UserErrorPluginConfigNotFound", "Application consistency is not configured",
            "No VMSnapshotScriptPluginConfig.json: this is the default and gives file-system-consistent backups.",
            ("Nothing to do unless you want application consistency: add "
             "/etc/azure/VMSnapshotScriptPluginConfig.json with your pre/post scripts.",), False,
            "FailedPrepostPluginConfigNotFound"),
    317: _r("UserErrorInsufficientPermissionforJSONConfigFile", "The script plugin configuration has unsafe permissions",
            "VMSnapshotScriptPluginConfig.json is not owned by root or is accessible to group/others.", (_PERMS,),
            False, "FailedPrepostPluginConfigPermissionError"),
    318: _r("UserErrorInsufficientPermissionforJSONConfigFile", "The script plugin configuration has the wrong owner",
            "VMSnapshotScriptPluginConfig.json is not owned by root.", (_PERMS,), False,
            "FailedPrepostPluginConfigOwnershipError"),
    402: _r("ExtensionCommandTooLate", "The snapshot command arrived too late",
            "The extension refused a command issued more than 140 minutes earlier (the CRP timeout limit).",
            ("A new attempt with a fresh command is needed; the service retries on the next dispatch.",
             "If this repeats, the VM agent is picking up commands late: " + _AGENT,
             "Check that the VM's clock is synchronised."), True, "FailedGuestAgentInvokedCommandTooLate"),
    556: _r("ExtensionHostSnapshotRemoteServerError", "The host snapshot service failed",
            "The host-side snapshot service returned a server error.", (_RETRY,), True,
            "FailedHostSnapshotRemoteServerError"),
    761: _r("ExtensionSnapshotFailedRestrictedNetwork", "Some disks could not be snapshotted",
            "Some (not all) disk snapshot requests failed: part of the storage is unreachable or refused the SAS.",
            (_NETWORK, "Check the per-disk errors below.", _RETRY), True,
            "FailedRetryableSnapshotFailedRestrictedNetwork"),
}

_WORKLOAD = ("PreError", "ConfParsingError", "InvalidRole", "InvalidWorkloadName", "PostError",
             "AuthorizationMissing", "ConnectionError", "IPCDirectoryMissing", "DatabaseStatusChanged",
             "QuiescingError", "QuiescingTimeout", "DatabaseInNoArchiveLog", "LogModeChanged")
_WORKLOAD_RETRY = {"ConnectionError", "QuiescingTimeout", "DatabaseStatusChanged"}
for _offset, _name in enumerate(_WORKLOAD):
    EXTENSION_CODES[500 + _offset] = _r(
        f"UserErrorWorkload{_name}", f"Database workload step failed: {_name}",
        f"The database pre/post step configured in /etc/azure/workload.conf failed ({_name}).",
        ("Check /etc/azure/workload.conf and the database's state and credentials; details are in the job's "
         "log blob.",) + ((_RETRY,) if _name in _WORKLOAD_RETRY else ()),
        _name in _WORKLOAD_RETRY, f"FailedWorkload{_name}")


# Errors the service detects itself (no status from the VM).
VM_NOT_FOUND = "UserErrorVmNotFound"
SAS_INVALID = "UserErrorSasExpired"
TIMED_OUT = "GuestAgentSnapshotTaskStatusError"
OPERATION_IN_PROGRESS = "UserErrorBackupOperationInProgress"
STATUS_UNREADABLE = "StatusBlobUnreadable"
DISPATCH_FAILED = "UserErrorGuestAgentStatusUnavailable"
NOT_PROTECTED = "UserErrorBcmDatasourceNotPresent"
CRP_USER_ERROR = "UserErrorCrpReportedUserError"
ON_DEMAND_LIMIT = "UserErrorBackupOperationLimitReached"
TASK_NOT_QUEUED = "TaskQueueUnavailable"
DISK_BLOB_MISSING = "UserErrorDiskBlobNotFound"
EXTENSION_WARNING = "ExtensionReportedWarning"

# Errors of the restore-point method (managed disks): what the Compute API or the restore point said.
RP_EXTENSION_NOT_READY = "UserErrorRestorePointExtensionNotProvisioned"
RP_VM_NOT_RUNNING = "UserErrorRestorePointVmNotRunning"
RP_CLIENT_ERROR = "UserErrorRestorePointClientError"
RP_DISK_NOT_SUPPORTED = "UserErrorRestorePointDiskNotSupported"
RP_THROTTLED = "RestorePointRequestThrottled"
RP_NOT_AUTHORIZED = "UserErrorRestorePointNotAuthorized"
RP_TIMED_OUT = "RestorePointCreationTimedOut"
RP_FAILED = "RestorePointCreationFailed"
RP_REPLICATION_FAILED = "RestorePointDiskReplicationFailed"
RP_WARNING = "RestorePointCompletedWithWarning"

# What a retention run reports about one VM (shared/services/retention.py); each is a Retention job's error.
RP_DATA_MISSING = "UserErrorRecoveryPointDataMissing"
RETENTION_TIME_INVALID = "RetentionPointTimeInFuture"
RETENTION_NOT_CONFIRMED = "RetentionLatestPointNotConfirmed"
RETENTION_ITEM_FAILED = "RetentionItemFailed"

# Restores and restore drills (shared/services/restore.py, restore_testing.py).
RESTORE_TARGET_EXISTS = "UserErrorRestoreTargetExists"
RESTORE_COPY_FAILED = "RestoreCopyFailed"
RESTORE_VERIFY_FAILED = "RestoreVerificationFailed"
RESTORE_FAILED = "RestoreFailed"
RESTORE_STALLED = "RestoreNoProgress"
RESTORE_SOURCE_MISSING = "UserErrorRestoreSourceMissing"
RESTORE_TEST_FAILED = "RestoreTestValidationFailed"
RESTORE_VM_RUNNING = "UserErrorRestoreVmRunning"
RESTORE_SWAP_FAILED = "RestoreDiskSwapFailed"
RESTORE_GROUP_MISSING = "UserErrorRestoreResourceGroupNotFound"

_RP_EXTENSION_LOG = ("Read the extension log on the VM: "
                     "/var/log/azure/Microsoft.Azure.RecoveryServices.VMSnapshotLinux/extension.log.")

SERVICE_ERRORS: dict[str, Remediation] = {
    RESTORE_TARGET_EXISTS: _r(
        RESTORE_TARGET_EXISTS, "The restore target already holds a disk of that name",
        "A blob (or managed disk) with a restored disk's name exists in the target and was not made by this "
        "restore; an AlternateLocation restore never replaces anything.",
        ("Restore into a new container or resource group, or delete what is there first.",
         "To replace the VM's own disks, stop the VM and restore with --restore-mode OriginalLocation --yes."),
        False),
    RESTORE_COPY_FAILED: _r(
        RESTORE_COPY_FAILED, "The service-side copy of a disk failed",
        "Storage (or the Compute API) could not copy the recovery point's snapshot into the target.",
        ("Check that the recovery point still exists ('vmsnap recoverypoint show') and that the service may "
         "write in the target (blob data / Microsoft.Compute/disks/write), then retry the restore.",), True),
    RESTORE_VERIFY_FAILED: _r(
        RESTORE_VERIFY_FAILED, "A restored disk differs from its recovery point",
        "After the copy, the restored disk's bytes (or size) did not equal the snapshot's.",
        ("Do not use the restored disk; restore again into a new target.",
         "If it repeats, check the storage account's health and report it with the job id."), True),
    RESTORE_FAILED: _r(
        RESTORE_FAILED, "The restore could not finish",
        "An unexpected refusal stopped the restore; what it had created was removed.",
        ("Check that storage and the Compute API are reachable, then retry the restore.",), True),
    RESTORE_STALLED: _r(
        RESTORE_STALLED, "The restore stopped making progress",
        "No restore worker recorded progress within the no-progress window (30 minutes): the worker's host "
        "stopped and the task did not come back, or a copy hangs.",
        ("Look for the restore worker's errors in the function's log (search for the job id).",
         "Retry the restore; a copy this job made is replaced, a disk it verified is kept."), True),
    RESTORE_SOURCE_MISSING: _r(
        RESTORE_SOURCE_MISSING, "The recovery point's data is gone",
        "A snapshot (or the VM restore point) this restore copies from no longer exists; the point is now "
        "Unavailable with the reason.",
        ("Restore another point ('vmsnap recoverypoint list --vm <VM>'), or the disks whose snapshots remain "
         "one by one with --disk <LUN>.",
         "Find out who deleted the snapshot (the storage account's activity log) and take a fresh backup."),
        False),
    RESTORE_VM_RUNNING: _r(
        RESTORE_VM_RUNNING, "The VM was started during the restore",
        "An OriginalLocation restore replaces the disks of a stopped VM only; the VM was running when the "
        "restored disks were ready, so none was put in. The VM kept its own disks; what the restore created "
        "was removed.",
        ("Stop (deallocate) the VM and keep it stopped until the Restore job ends, then restore again with "
         "--restore-mode OriginalLocation --yes.",
         "Or restore to AlternateLocation and swap the disks in yourself."), False),
    RESTORE_SWAP_FAILED: _r(
        RESTORE_SWAP_FAILED, "The VM's disks could not be replaced",
        "Azure refused or failed the update of the VM's storage profile that puts the restored disks in; the "
        "VM was given its own disks back and what the restore created was removed (the job's notes say what, "
        "if anything, could not be).",
        ("Check that the VM is deallocated and that the service may write it and attach disks "
         "(Microsoft.Compute/virtualMachines/write, Microsoft.Compute/disks/write), then retry the restore.",
         "Read the VM's activity log for the update's error (search for the VM name and the job's time)."),
        True),
    RESTORE_GROUP_MISSING: _r(
        RESTORE_GROUP_MISSING, "The target resource group does not exist",
        "ARM answered ResourceGroupNotFound for the resource group the restore creates its managed disks in; "
        "the same request fails the same way until the group exists, so a retry alone cannot help.",
        ("Create the resource group in the VM's region ('az group create --name <group> --location <region>') "
         "and restore again, or restore into an existing group with --target-resource-group.",), False),
    RESTORE_TEST_FAILED: _r(
        RESTORE_TEST_FAILED, "The restore drill found a problem",
        "The point restored, but a validation failed: a disk differs from its point, the OS disk holds no "
        "readable partition table or file system, or the probe file is missing or differs.",
        ("Read the failed checks in the job ('vmsnap job show --name <job>').",
         "Back the VM up again and run the drill on the new point ('vmsnap restore-test run --vm <VM>'); if "
         "the new point fails too, the backups of this VM cannot be trusted: check the VM's pre-script and "
         "file systems."), False),
    VM_NOT_FOUND: _r(VM_NOT_FOUND, "The VM no longer exists (BCMV2VMNotFound)",
                     "The protected VM could not be found in the inventory.",
                     ("Re-create the VM, or stop protection for it.",), False),
    SAS_INVALID: _r(SAS_INVALID, "A storage access signature was refused",
                    "A SAS for a disk, status or log blob had expired or was invalid when it was used.",
                    ("Check the clocks of the service and the VM; the next attempt mints fresh signatures.", _RETRY),
                    True),
    TIMED_OUT: _r(TIMED_OUT, "Could not get the snapshot status from the VM agent",
                  "No final status came back within the extension's 140-minute window.",
                  ("Update the Linux agent from the distribution's repository, or restart it: " + _AGENT,
                   _AGENT_CONF, _NETWORK,
                   "If the status blob is empty, the extension never ran: check that it is installed and enabled."),
                  True),
    OPERATION_IN_PROGRESS: _r(OPERATION_IN_PROGRESS, "Another backup of this VM is in progress",
                              "A backup job for the same VM is still running.",
                              ("Wait for the running job to finish, or cancel it, then retry.",), True),
    STATUS_UNREADABLE: _r(STATUS_UNREADABLE, "The status blob could not be read",
                          "The status blob written by the extension is not a status the service understands.",
                          ("Inspect it with 'vmsnap status show <blob URL>'; the blob is kept.",
                           "Make sure the VM runs a supported VMSnapshot extension version."), True),
    DISPATCH_FAILED: _r(DISPATCH_FAILED, "The VM agent did not accept the snapshot command",
                        "Handing the extension command to the VM failed.",
                        (_AGENT, _AGENT_CONF, _RETRY), True),
    NOT_PROTECTED: _r(NOT_PROTECTED, "The VM is not actively protected",
                      "Protection for this VM is stopped or was never enabled.",
                      ("Resume protection for the VM.",), False),
    ON_DEMAND_LIMIT: _r(ON_DEMAND_LIMIT, "On-demand backup limit reached for today",
                        "A VM takes at most 3 successful on-demand backups and 9 on-demand attempts per UTC day; "
                        "this request came after the limit was reached.",
                        ("Wait for the next UTC day, or rely on the policy's scheduled backups.",
                         "Only start on-demand backups with `vmsnap backup-now`; a task put on the queue by hand "
                         "counts against the same limit."), False),
    TASK_NOT_QUEUED: _r(TASK_NOT_QUEUED, "The backup could not be queued",
                        "The snapshot task could not be sent to the Service Bus queue, so the backup never started.",
                        ("Check the ServiceBusConnection setting and that the queue named by SNAPSHOT_TASKS_QUEUE "
                         "exists and is reachable.",
                         "Run `vmsnap backup-now` again: this failed request does not block it and does not count "
                         "against the daily limit."), True),
    DISK_BLOB_MISSING: _r(DISK_BLOB_MISSING, "A disk's blob does not exist",
                          "Storage answered that the blob behind a disk of the VM does not exist (BlobNotFound), "
                          "so it could not be snapshotted. It can be back once a storage account failover "
                          "completes, so the backup is retried like any failed snapshot.",
                          ("Check that the blob named in this error exists in its storage account (az storage "
                           "blob show --account-name <account> --container-name <container> --name <blob>).",
                           "If the account is failing over, or just did, wait for the failover to complete; the "
                           "retries (5 and 15 minutes on) or the next backup then snapshot the disk.",
                           "If the disk was moved or replaced, the VM inventory is stale: update the VM's disks "
                           "in the inventory, then run the backup again.",
                           "If the disk was lost, restore it from a recovery point ('vmsnap restore restore-disks "
                           "--vm <vm> --rp-name <point> --disk <LUN> ...'); if the VM is gone, stop its "
                           "protection."), True),
    EXTENSION_WARNING: _r(EXTENSION_WARNING, "The extension finished with a warning",
                          "The extension reported its run as 'warning' without an error code that says why; the "
                          "snapshots it reports as taken are kept.",
                          ("Read what the extension reported (in this error) and the job's log blob.",
                           "Make sure the VM runs a supported VMSnapshot extension version."), False),
    CRP_USER_ERROR: _r(CRP_USER_ERROR, "The VM reported an error",
                       "The extension reported a failure with a code this service does not know.",
                       ("Read the job's error details and log blob.", _RETRY), True),
    RP_EXTENSION_NOT_READY: _r(
        RP_EXTENSION_NOT_READY, "The VM's extensions are not ready for a restore point",
        "Azure creates a restore point only after every extension on the VM has finished provisioning, and "
        "installs and runs the VMSnapshotLinux extension through the VM agent; the agent or an extension did "
        "not get there.",
        (_AGENT, _AGENT_CONF, "Remove or repair any extension shown as failed on the VM, then retry.",
         _RP_EXTENSION_LOG, _RETRY), True),
    RP_VM_NOT_RUNNING: _r(
        RP_VM_NOT_RUNNING, "The VM is not running",
        "An application-consistent restore point needs the VM running, with its agent Ready, so the "
        "extension can run the pre/post scripts and freeze the file systems.",
        ("Start the VM, wait until its agent shows Ready, and retry the backup.",
         "For a VM that is meant to stay stopped, set the policy's restore point consistency to "
         "CrashConsistent."), False),
    RP_CLIENT_ERROR: _r(
        RP_CLIENT_ERROR, "Azure refused the restore point because of the VM or its disks",
        "Azure answered VMRestorePointClientError (or DiskRestorePointClientError): one code for several "
        "causes on the VM's side, named in Azure's message below. The documented ones: the VM's 500 restore "
        "points (across all its collections) are reached; a shared disk is attached; another restore point "
        "of the VM is being created; the VM has no network access or too few resources; a disk's key vault "
        "is gone.",
        ("Read Azure's message below: it names the cause.",
         "At the limit: run retention ('vmsnap retention run') or delete restore points the VM no longer "
         "needs; deleting one does not lose the others, they are incremental.",
         "A shared disk: exclude it from protection ('vmsnap protection update-for-vm').",
         "Another restore point in progress: wait for it; the next attempt is retried.",
         _NETWORK, _RETRY), True),
    RP_DISK_NOT_SUPPORTED: _r(
        RP_DISK_NOT_SUPPORTED, "A disk of the VM cannot be in a restore point",
        "Restore points cover managed disks only; ephemeral OS disks and shared disks must be excluded, and "
        "Ultra and Premium SSD v2 disks allow application consistency only.",
        ("Exclude the disk named in the error from protection, or move its data to a supported managed disk.",
         "Check the 'Support matrix for VM restore points' for the disk's type."), False),
    RP_THROTTLED: _r(
        RP_THROTTLED, "The Compute API throttled the restore point requests",
        "Azure Resource Manager answered 429 Too Many Requests for longer than the service's retries waited.",
        ("Spread the schedules of the policies so fewer VMs start at the same minute.", _RETRY), True),
    RP_NOT_AUTHORIZED: _r(
        RP_NOT_AUTHORIZED, "The service may not create restore points for this VM",
        "The worker's identity lacks a role that allows restore point collections and restore points on the VM's "
        "resource group.",
        ("Grant the worker's identity the restore point role of infra/app/vm-access.bicep on the VM's resource "
         "group (docs/restore-points.md lists its actions).",), False),
    RP_TIMED_OUT: _r(
        RP_TIMED_OUT, "The restore point never finished",
        "The restore point stayed Creating past the service's window: the platform could not finish the "
        "extension's run or the disk snapshots. The service deletes it (it counts against the VM's limit); "
        "the details say whether that worked.",
        (_AGENT, _RP_EXTENSION_LOG,
         "If the details say the restore point could not be deleted, delete it ('az restore-point delete') "
         "once it is no longer Creating.", _RETRY),
        True),
    RP_FAILED: _r(
        RP_FAILED, "The restore point failed",
        "Azure reported the restore point as Failed, or refused it, with an internal error or a code this "
        "service does not know; Azure's code and message are below.",
        ("Read Azure's code and message below and the restore point's instance view "
         "('az restore-point show --expand instanceView').", _RP_EXTENSION_LOG, _RETRY), True),
    RP_REPLICATION_FAILED: _r(
        RP_REPLICATION_FAILED, "A disk restore point could not be copied",
        "The background copy of a disk restore point failed, so that disk has no usable recovery point.",
        ("Retry the backup; if it fails again for the same disk, check the disk's health in the portal.",),
        True),
    RP_DATA_MISSING: _r(
        RP_DATA_MISSING, "A recovery point's data is gone",
        "Snapshots (or the VM restore point) of this recovery point were deleted outside vmsnap or lost, so it "
        "cannot be restored as a whole. It is now Unavailable and no longer counts as the VM's latest point; "
        "retention kept the newest point whose data is all there.",
        ("Find out who or what deleted them (the storage account's or the resource group's activity log), and "
         "guard the disks' account with a delete lock or blob soft delete.",
         "Take a fresh backup now: 'vmsnap backup-now --vm <VM>'.",
         "Disks whose snapshots remain can still be restored one by one ('vmsnap restore restore-disks ... "
         "--disk <LUN>')."), False),
    RETENTION_TIME_INVALID: _r(
        RETENTION_TIME_INVALID, "A recovery point is stamped in the future",
        "No backup that ran can have made this time, so no retention rule can judge the point: it is kept, "
        "never counted as the VM's latest point, and reported by every run.",
        ("Look at the job that made it ('vmsnap job show --name <job id>'): a task put on the queue by hand "
         "can carry any time; the worker now refuses such tasks.",), False),
    RETENTION_NOT_CONFIRMED: _r(
        RETENTION_NOT_CONFIRMED, "Retention could not confirm the VM's latest point",
        "Before it deletes anything of a VM, retention checks that the point it keeps still has all its "
        "data; that check could not be made now (storage or the Compute API did not answer, or the VM is "
        "unknown), so nothing of this VM was deleted in this run.",
        ("Nothing to do if it passes: the next run checks again.",
         "If it repeats, check the app's access to the storage account and the Compute API, and that the VM "
         "still exists (or stop its protection)."), True),
    RETENTION_ITEM_FAILED: _r(
        RETENTION_ITEM_FAILED, "Retention of this VM failed",
        "An unexpected error stopped retention of this VM; the other VMs were processed.",
        ("Search the function's log for the VM's name: the error is logged with its traceback.",
         "The next run tries again; if the error repeats, its record is likely malformed: report it."), True),
    RP_WARNING: _r(
        RP_WARNING, "Azure reported a warning on the restore point",
        "The restore point succeeded, and its instance view carries a status at level Warning.",
        ("Read Azure's code and message below and the restore point's instance view "
         "('az restore-point show --expand instanceView').",), False),
}

SUCCESS_CODES = frozenset({0, 1})


def for_extension_code(code: int) -> Remediation:
    """The remediation of an extension or health code; an unknown code gets a generic, honest answer."""
    known = EXTENSION_CODES.get(code)
    if known is not None:
        return known
    generic = SERVICE_ERRORS[CRP_USER_ERROR]
    return Remediation(generic.error_code, f"The VM reported extension code {code}", generic.cause,
                       generic.recommendations, generic.retryable)


def for_extension_name(name: str) -> Remediation | None:
    """The remediation of an extension code given by its enum name (``FailedPrepostPreScriptFailed``)."""
    return next((fix for fix in EXTENSION_CODES.values() if fix.extension_name == name), None)


def for_service_error(error_code: str) -> Remediation:
    """The remediation of an error the service raises itself (KeyError for a code not in the catalogue)."""
    return SERVICE_ERRORS[error_code]
