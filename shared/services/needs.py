"""What a use case may ask of the composition root, one dependency at a time.

A use case's parameter is one of these, or a Protocol composed of them, listed flat and in alphabetical
order (``class PlanNeeds(HasClock, HasJobs, Protocol)``; docs/contracts.md says why), so its signature
lists what it reads; ``shared.bootstrap.Services`` has them all and satisfies any such composition
structurally, which mypy checks at every call site.
"""
from __future__ import annotations

from typing import Protocol

from shared.clock import Clock
from shared.ports import (AlertNotifier, AlertStore, BackupClaims, DigestQueue, DiskCopier, Dispatcher,
                          FileSystemReader, Inventory, JobFeed, JobStore, PolicyStore, ProtectedItemStore,
                          RecoveryPointStore, RestorePoints, RestoreQueue, RestoreTestPlanStore,
                          RetentionProgressStore, RetentionQueue, RollupStore, SasMinter, ShardProgressStore,
                          ShardQueue, SnapshotStore, StatusBlobArchive, StatusBlobs, TaskQueue)
from shared.settings import Settings
from shared.telemetry import Telemetry


class HasClock(Protocol):
    @property
    def clock(self) -> Clock: ...


class HasSettings(Protocol):
    @property
    def settings(self) -> Settings: ...


class HasJobs(Protocol):
    @property
    def jobs(self) -> JobStore: ...


class HasPolicies(Protocol):
    @property
    def policies(self) -> PolicyStore: ...


class HasProtectedItems(Protocol):
    @property
    def protected_items(self) -> ProtectedItemStore: ...


class HasInventory(Protocol):
    @property
    def inventory(self) -> Inventory: ...


class HasRecoveryPoints(Protocol):
    @property
    def recovery_points(self) -> RecoveryPointStore: ...


class HasSnapshots(Protocol):
    @property
    def snapshots(self) -> SnapshotStore: ...


class HasRestorePoints(Protocol):
    @property
    def restore_points(self) -> RestorePoints: ...


class HasDiskCopier(Protocol):
    @property
    def disk_copier(self) -> DiskCopier: ...


class HasFilesystems(Protocol):
    @property
    def filesystems(self) -> FileSystemReader: ...


class HasTaskQueue(Protocol):
    @property
    def task_queue(self) -> TaskQueue: ...


class HasRestoreQueue(Protocol):
    @property
    def restore_queue(self) -> RestoreQueue: ...


class HasDigestQueue(Protocol):
    @property
    def digest_queue(self) -> DigestQueue: ...


class HasRestoreTests(Protocol):
    @property
    def restore_tests(self) -> RestoreTestPlanStore: ...


class HasProgress(Protocol):
    @property
    def progress(self) -> ShardProgressStore: ...


class HasRetentionProgress(Protocol):
    @property
    def retention_progress(self) -> RetentionProgressStore: ...


class HasRetentionQueue(Protocol):
    @property
    def retention_queue(self) -> RetentionQueue: ...


class HasStatusArchive(Protocol):
    @property
    def status_archive(self) -> StatusBlobArchive: ...


class HasTelemetry(Protocol):
    @property
    def telemetry(self) -> Telemetry: ...


class HasAlerts(Protocol):
    @property
    def alerts(self) -> AlertStore: ...


class HasNotifier(Protocol):
    @property
    def notifier(self) -> AlertNotifier | None: ...


class HasJobFeed(Protocol):
    @property
    def job_feed(self) -> JobFeed: ...


class HasRollup(Protocol):
    @property
    def rollup(self) -> RollupStore: ...


class HasClaims(Protocol):
    @property
    def claims(self) -> BackupClaims: ...


class HasDispatcher(Protocol):
    @property
    def dispatcher(self) -> Dispatcher: ...


class HasSas(Protocol):
    @property
    def sas(self) -> SasMinter: ...


class HasStatusBlobs(Protocol):
    @property
    def status_blobs(self) -> StatusBlobs: ...


class HasShardQueue(Protocol):
    @property
    def shard_queue(self) -> ShardQueue: ...
