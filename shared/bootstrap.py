"""The composition root: builds every adapter from Settings, once per process, lazily.

Triggers and the CLI call ``services()``; tests build ``Services(settings, clock=..., jobs=fake, ...)``
with whatever fakes they need: any dependency passed in replaces the production one.
"""
from __future__ import annotations

import logging
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

from shared.clock import Clock, SystemClock
from shared.errors import ConfigurationError
from shared.ports import (AlertNotifier, AlertStore, BackupClaims, BlobUrls, DigestQueue, DiskCopier, Dispatcher,
                          FileSystemReader, Inventory, JobFeed, JobStore, LocalVms, PolicyStore, ProtectedItemStore,
                          RecoveryPointStore, RestorePoints, RestoreQueue, RestoreTestPlanStore,
                          RetentionProgressStore, RetentionQueue, RollupStore, SasMinter, ShardProgressStore,
                          ShardQueue, SnapshotStore, StatusBlobArchive, StatusBlobs, TaskQueue)
from shared.settings import Settings, get_settings
from shared.telemetry import Telemetry

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from shared.domain.jobs import Job
    from shared.services.dashboard import ReportCache
    from azure.data.tables import TableServiceClient
    from azure.storage.blob import BlobServiceClient

log = logging.getLogger(__name__)


class _TelemetryOnFirstUse:
    """The job store's outcome recorder: ``Services.telemetry``, built when a first job ends. A process that
    only reads jobs (most CLI commands) never loads OpenTelemetry's SDK, a tenth of a second of its start."""

    def __init__(self, services: Services) -> None:
        self._services = services

    def job_finished(self, job: Job) -> None:
        self._services.telemetry.job_finished(job)


class Services:
    """Every dependency a use case may need, built on first use."""

    def __init__(self, settings: Settings | None = None, clock: Clock | None = None, **overrides: Any) -> None:
        self.settings = settings or get_settings()
        self.clock = clock or SystemClock()
        for name, value in overrides.items():
            if not hasattr(type(self), name):
                raise TypeError(f"Services has no dependency named {name!r}")
            self.__dict__[name] = value      # pre-fills the cached_property

    # --- credentials and SDK clients -------------------------------------------------------
    @cached_property
    def credential(self) -> TokenCredential:
        from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

        service_bus = self.settings.service_bus
        client_id = self.settings.storage.client_id or (service_bus.client_id if service_bus else None)
        if client_id:
            return ManagedIdentityCredential(client_id=client_id)
        return DefaultAzureCredential()

    @cached_property
    def blob_service(self) -> BlobServiceClient:
        from shared.adapters.clients import blob_service_client

        return blob_service_client(self.settings.storage, self)

    @cached_property
    def table_service(self) -> TableServiceClient:
        from shared.adapters.clients import table_service_client

        return table_service_client(self.settings.storage, self)

    # --- ports ------------------------------------------------------------------------------
    @cached_property
    def task_queue(self) -> TaskQueue:
        from shared.adapters.servicebus import ServiceBusTaskQueue

        return ServiceBusTaskQueue.from_settings(self.settings, self)

    @cached_property
    def jobs(self) -> JobStore:
        from shared.adapters.table_jobs import TableJobStore
        from shared.services.outcomes import ObservedJobStore

        # Every write goes through the observer: a job turning final, however it does, reaches the job
        # feed the alert evaluator reads, and its outcome the metrics (shared/services/outcomes.py).
        return ObservedJobStore(TableJobStore(self.table_service, self.settings.table("jobs")), self.job_feed,
                                self.clock, _TelemetryOnFirstUse(self))

    @cached_property
    def job_feed(self) -> JobFeed:
        from shared.adapters.table_alerts import TableJobFeed

        return TableJobFeed(self.table_service, self.settings.table("jobfeed"))

    @cached_property
    def rollup(self) -> RollupStore:
        from shared.adapters.table_rollup import TableRollupStore

        return TableRollupStore(self.table_service, self.settings.table("rollup"))

    @cached_property
    def alerts(self) -> AlertStore:
        from shared.adapters.table_alerts import TableAlertStore

        return TableAlertStore(self.table_service, self.settings.table("alerts"))

    @cached_property
    def notifier(self) -> AlertNotifier | None:
        """The webhook alerts go to; None when ALERT_WEBHOOK_URL is not set."""
        if not self.settings.alert_webhook_url:
            return None
        from shared.adapters.webhook import WebhookNotifier

        return WebhookNotifier(self.settings.alert_webhook_url)

    @cached_property
    def report_cache(self) -> ReportCache:
        """Compliance reports the dashboard reuses for a short time (shared/services/dashboard.py)."""
        from shared.services.dashboard import ReportCache

        return ReportCache()

    @cached_property
    def telemetry(self) -> Telemetry:
        return Telemetry.for_environment()

    @cached_property
    def policies(self) -> PolicyStore:
        from shared.adapters.table_protection import TablePolicyStore

        return TablePolicyStore(self.table_service, self.settings.table("policies"))

    @cached_property
    def protected_items(self) -> ProtectedItemStore:
        from shared.adapters.table_protection import TableProtectedItemStore

        return TableProtectedItemStore(self.table_service, self.settings.table("items"))

    @cached_property
    def progress(self) -> ShardProgressStore:
        from shared.adapters.table_progress import TableShardProgressStore

        return TableShardProgressStore(self.table_service, self.settings.table("progress"))

    @cached_property
    def retention_progress(self) -> RetentionProgressStore:
        from shared.adapters.table_progress import TableRetentionProgressStore

        return TableRetentionProgressStore(self.table_service, self.settings.table("progress"))

    @cached_property
    def claims(self) -> BackupClaims:
        from shared.adapters.table_claims import TableBackupClaims

        return TableBackupClaims(self.table_service, self.settings.table("claims"))

    @cached_property
    def restore_queue(self) -> RestoreQueue:
        from shared.adapters.servicebus import ServiceBusRestoreQueue

        return ServiceBusRestoreQueue.from_settings(self.settings, self)

    @cached_property
    def digest_queue(self) -> DigestQueue:
        from shared.adapters.servicebus import ServiceBusDigestQueue

        return ServiceBusDigestQueue.from_settings(self.settings, self)

    @cached_property
    def restore_tests(self) -> RestoreTestPlanStore:
        from shared.adapters.table_protection import TableRestoreTestPlanStore

        return TableRestoreTestPlanStore(self.table_service, self.settings.table("restoretests"))

    @cached_property
    def filesystems(self) -> FileSystemReader:
        from shared.adapters.filesystems import DebugfsReader

        return DebugfsReader()

    @cached_property
    def shard_queue(self) -> ShardQueue:
        from shared.adapters.servicebus import ServiceBusShardQueue

        return ServiceBusShardQueue.from_settings(self.settings, self)

    @cached_property
    def retention_queue(self) -> RetentionQueue:
        from shared.adapters.servicebus import ServiceBusRetentionQueue

        return ServiceBusRetentionQueue.from_settings(self.settings, self)

    @cached_property
    def inventory(self) -> Inventory:
        if self.settings.dispatcher == "arm":
            from shared.adapters.compute_inventory import ComputeInventory

            return ComputeInventory(self.credential, self._subscription())
        from shared.adapters.table_protection import TableInventory

        return TableInventory(self.table_service, self.settings.table("vms"))

    @cached_property
    def local_vms(self) -> LocalVms:
        from shared.adapters.local_vms import LocalVmStore

        return LocalVmStore(self.table_service, self.settings.table("vms"), self.blob_service)

    @cached_property
    def sas(self) -> SasMinter:
        from shared.adapters.blob_sas import BlobSasMinter

        return BlobSasMinter(self.blob_service, clock=self.clock)

    @cached_property
    def status_blobs(self) -> StatusBlobs:
        from shared.adapters.blob_sas import StatusBlobStore

        return StatusBlobStore(self.blob_service, self.settings.status_container)

    @cached_property
    def dispatcher(self) -> Dispatcher:
        if self.settings.dispatcher == "arm":
            from shared.adapters.dispatch_arm import ArmDispatcher

            return ArmDispatcher(self.credential, self._subscription())
        from shared.adapters.dispatch_local import LocalDispatcher

        return LocalDispatcher(self.settings.local_vm_root)

    def _subscription(self) -> str:
        # Settings already refuses DISPATCHER=arm without a subscription; this keeps the type honest.
        if not self.settings.subscription_id:
            raise ConfigurationError("AZURE_SUBSCRIPTION_ID is required when DISPATCHER is arm")
        return self.settings.subscription_id


    @cached_property
    def restore_points(self) -> RestorePoints:
        # Managed-disk VMs, local or in Azure: the subscription comes from each VM's resource id, the
        # endpoint from ComputeConnection (the local one) or else ARM with the app's identity.
        from shared.adapters.restore_points import ComputeRestorePoints

        if self.settings.compute is not None:
            from shared.adapters.clients import compute_emulator_options

            credential, options = compute_emulator_options(self.settings.compute)
            return ComputeRestorePoints(credential, **options)
        return ComputeRestorePoints(self.credential)

    # --- recovery points, retention and restore ----------------------------------------------------
    @cached_property
    def recovery_points(self) -> RecoveryPointStore:
        from shared.adapters.table_recovery import TableRecoveryPointStore

        return TableRecoveryPointStore(self.table_service, self.settings.table("points"))

    @cached_property
    def snapshots(self) -> SnapshotStore:
        from shared.adapters.snapshots import BlobSnapshots

        return BlobSnapshots(self.blob_service, clock=self.clock)

    @cached_property
    def disk_copier(self) -> DiskCopier:
        # One Blob adapter lists, deletes and copies snapshots; a test that replaces ``snapshots``
        # with a fake gets that fake here too.
        return cast(DiskCopier, self.snapshots)

    @cached_property
    def status_archive(self) -> StatusBlobArchive:
        from shared.adapters.snapshots import StatusBlobArchive

        return StatusBlobArchive(self.blob_service, self.settings.status_container)


_services: Services | None = None


def services() -> Services:
    """The process-wide composition root (built on first call, never at import)."""
    global _services
    if _services is None:
        _services = Services()
    return _services


def blob_urls() -> BlobUrls:
    """Blobs by URL; the process's services (and so the settings) are built only for a URL without a SAS."""
    from shared.adapters.blob_sas import BlobUrlReader

    return BlobUrlReader(lambda: services().blob_service.credential)


def reset_services(replacement: Services | None = None) -> None:
    """Replace or forget the process-wide services (the local host and tests use this)."""
    global _services
    _services = replacement
