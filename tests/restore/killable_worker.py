"""A restore worker in its own process, for the host-kill tests: it runs one restore task and, once every
disk is copied, verifies the OS disk and then hangs verifying the next (page blobs), or waits on whatever
the Compute endpoint keeps it waiting for (managed disks: ``ComputeConnection`` given), until it is
killed (SIGKILL)."""
from __future__ import annotations

import sys
import time

from shared.bootstrap import Services
from shared.domain.inventory import OS_DISK_LUN
from shared.domain.restore import RestoreTask
from shared.services.restore import run_restore
from shared.settings import Settings
from tests.fakes import RecordingRestoreQueue


class _HangsAfterTheOsDisk:
    """The real copier; verifying any disk after the OS disk never returns (the host dies there)."""

    def __init__(self, inner):
        self._inner = inner

    def verify(self, snapshot_url, target_url):
        if "-os.vhd" not in target_url:
            while True:
                time.sleep(1)
        return self._inner.verify(snapshot_url, target_url)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def main(storage: str, prefix: str, job_id: str, vm: str, compute: str = "") -> None:
    settings = Settings.from_env({"BackupStorage": storage, "TABLE_PREFIX": prefix,
                                  "ServiceBusConnection": "Endpoint=sb://127.0.0.1:1;SharedAccessKeyName=x;"
                                                          "SharedAccessKey=y;",
                                  **({"ComputeConnection": compute} if compute else {})})
    plain = Services(settings)
    svc = Services(settings, restore_queue=RecordingRestoreQueue(), disk_copier=_HangsAfterTheOsDisk(plain.snapshots))
    assert OS_DISK_LUN == -1
    run_restore(svc, RestoreTask(job_id, vm))


if __name__ == "__main__":
    main(*sys.argv[1:6])
