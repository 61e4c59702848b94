"""Type-level half of the contracts: every fake and adapter fits its port's Protocol (mypy checks this
module; tests/test_types.py runs mypy). The behavioural half is the contract suites beside it."""
from __future__ import annotations

from shared.adapters.blob_sas import BlobSasMinter, BlobUrlReader, StatusBlobStore
from shared.adapters.compute_inventory import ComputeInventory
from shared.adapters.dispatch_arm import ArmDispatcher
from shared.adapters.dispatch_local import LocalDispatcher
from shared.adapters.filesystems import DebugfsReader
from shared.adapters.local_vms import LocalVmStore
from shared.adapters.restore_points import ComputeRestorePoints
from shared.adapters.snapshots import BlobSnapshots, StatusBlobArchive as BlobStatusArchive
from shared.adapters.servicebus import (ServiceBusDigestQueue, ServiceBusRestoreQueue, ServiceBusRetentionQueue, ServiceBusShardQueue,
                                       ServiceBusTaskQueue)
from shared.adapters.table_alerts import TableAlertStore, TableJobFeed
from shared.adapters.table_claims import TableBackupClaims
from shared.adapters.table_jobs import TableJobStore
from shared.adapters.table_progress import TableRetentionProgressStore, TableShardProgressStore
from shared.adapters.table_protection import (TableInventory, TablePolicyStore, TableProtectedItemStore,
                                              TableRestoreTestPlanStore)
from shared.adapters.table_recovery import TableRecoveryPointStore
from shared.adapters.table_rollup import TableRollupStore
from shared.adapters.webhook import WebhookNotifier
from shared.ports import (AlertNotifier, AlertStore, BackupClaims, BlobUrls, DigestQueue, DiskCopier, Dispatcher,
                          ExtensionStatusReader, FileSystemReader, Inventory, JobFeed, JobStore, LocalVms, PolicyStore,
                          ProtectedItemStore, RecoveryPointStore, RestorePoints, RestoreQueue, RestoreTestPlanStore,
                          RetentionProgressStore, RetentionQueue, RollupStore, SasMinter, ShardProgressStore,
                          ShardQueue, SnapshotStore, StatusBlobArchive, StatusBlobs, TaskQueue)
from tests.fakes import (FakeDiskCopier, FakeFileSystems, FakeRestorePoints, FakeSasMinter, InMemoryBackupClaims,
                         InMemoryInventory, InMemoryJobStore, InMemoryStatusBlobs, RecordingDispatcher,
                         RecordingDigestQueue, RecordingRestoreQueue, RecordingRetentionQueue, RecordingShardQueue, RecordingTaskQueue,
                         ReportingDispatcher)
from tests.monitoring.fakes import InMemoryAlertStore, InMemoryJobFeed, InMemoryRollupStore, RecordingNotifier
from tests.recovery.fakes import FakeSnapshots, FakeStatusArchive, InMemoryRecoveryPointStore
from tests.scheduling.fakes import (InMemoryPolicyStore, InMemoryProtectedItemStore, InMemoryRetentionProgressStore,
                                    InMemoryShardProgressStore)

JOB_STORES: tuple[type[JobStore], ...] = (InMemoryJobStore, TableJobStore)
POLICY_STORES: tuple[type[PolicyStore], ...] = (InMemoryPolicyStore, TablePolicyStore)
ITEM_STORES: tuple[type[ProtectedItemStore], ...] = (InMemoryProtectedItemStore, TableProtectedItemStore)
INVENTORIES: tuple[type[Inventory], ...] = (InMemoryInventory, TableInventory, ComputeInventory)
STATUS_BLOBS: tuple[type[StatusBlobs], ...] = (InMemoryStatusBlobs, StatusBlobStore)
TASK_QUEUES: tuple[type[TaskQueue], ...] = (RecordingTaskQueue, ServiceBusTaskQueue)
DISPATCHERS: tuple[type[Dispatcher], ...] = (RecordingDispatcher, ReportingDispatcher, ArmDispatcher, LocalDispatcher)
# The dispatchers that also read back what the extension reported (the sweep's second channel).
STATUS_READERS: tuple[type[ExtensionStatusReader], ...] = (ReportingDispatcher, ArmDispatcher)
SAS_MINTERS: tuple[type[SasMinter], ...] = (FakeSasMinter, BlobSasMinter)
RECOVERY_POINT_STORES: tuple[type[RecoveryPointStore], ...] = (InMemoryRecoveryPointStore, TableRecoveryPointStore)
SNAPSHOT_STORES: tuple[type[SnapshotStore], ...] = (FakeSnapshots, BlobSnapshots)
BACKUP_CLAIMS: tuple[type[BackupClaims], ...] = (InMemoryBackupClaims, TableBackupClaims)
RESTORE_POINTS: tuple[type[RestorePoints], ...] = (FakeRestorePoints, ComputeRestorePoints)
ALERT_STORES: tuple[type[AlertStore], ...] = (InMemoryAlertStore, TableAlertStore)
JOB_FEEDS: tuple[type[JobFeed], ...] = (InMemoryJobFeed, TableJobFeed)
ROLLUP_STORES: tuple[type[RollupStore], ...] = (InMemoryRollupStore, TableRollupStore)
SHARD_PROGRESS: tuple[type[ShardProgressStore], ...] = (InMemoryShardProgressStore, TableShardProgressStore)
RETENTION_PROGRESS: tuple[type[RetentionProgressStore], ...] = (InMemoryRetentionProgressStore,
                                                                 TableRetentionProgressStore)
SHARD_QUEUES: tuple[type[ShardQueue], ...] = (RecordingShardQueue, ServiceBusShardQueue)
RETENTION_QUEUES: tuple[type[RetentionQueue], ...] = (RecordingRetentionQueue, ServiceBusRetentionQueue)
RESTORE_QUEUES: tuple[type[RestoreQueue], ...] = (RecordingRestoreQueue, ServiceBusRestoreQueue)
DIGEST_QUEUES: tuple[type[DigestQueue], ...] = (RecordingDigestQueue, ServiceBusDigestQueue)
# No fakes: the commands that use them are tested on the local stack.
LOCAL_VMS: tuple[type[LocalVms], ...] = (LocalVmStore,)
BLOB_URLS: tuple[type[BlobUrls], ...] = (BlobUrlReader,)
RESTORE_TEST_PLANS: tuple[type[RestoreTestPlanStore], ...] = (TableRestoreTestPlanStore,)
STATUS_ARCHIVES: tuple[type[StatusBlobArchive], ...] = (FakeStatusArchive, BlobStatusArchive)
FILE_SYSTEM_READERS: tuple[type[FileSystemReader], ...] = (FakeFileSystems, DebugfsReader)
ALERT_NOTIFIERS: tuple[type[AlertNotifier], ...] = (RecordingNotifier, WebhookNotifier)
DISK_COPIERS: tuple[type[DiskCopier], ...] = (FakeDiskCopier, BlobSnapshots)
