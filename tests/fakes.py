"""In-memory fakes of the ports, for unit tests of services (state assertions, not call counts).

They keep the ports' semantics that services rely on: insert-if-absent, read-modify-write with a
version check, duplicate detection by message id.
"""
from __future__ import annotations

import itertools
import json
import pickle
import threading
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Callable, Generic, Iterable, Iterator, Mapping, Protocol, Sequence, TypeVar
from urllib.parse import quote, unquote, urlencode

from shared.clock import Clock, utc
from shared.domain.bloburl import base_of, without_secrets
from shared.domain.claims import BackupClaim
from shared.domain.command import EXTENSION_WINDOW
from shared.domain.disk_digest import DigestRequest
from shared.domain.inventory import Vm
from shared.domain.jobs import Consistency, Job
from shared.domain.progress import PlanRequest
from shared.domain.restore import OWNER_KEY, RestoreTask
from shared.domain.restore_point import (ArmFailure, DiskRestorePointState, ManagedDiskState, RestorePointState,
                                         VmDisks, collection_name)
from shared.domain.restore_testing import EXT_SUPERBLOCK, FileSystemCheck, ext_superblock
from shared.domain.retention_progress import RetentionRequest
from shared.domain.shards import shard_of
from shared.domain.task import SnapshotTask
from shared.errors import ConflictError, NotFoundError, PermanentError, TransientError, ValidationError
from shared.ports import Digested, JobOutcome, JobPage, JobQuery, RestoredBlob, RestorePointRefused, Verification
from shared.redaction import redact


class _Message(Protocol):
    @property
    def message_id(self) -> str: ...


M = TypeVar("M", bound=_Message)


def _copy(value):
    """A deep copy, as a stored record would be read back (pickle: several times faster than deepcopy)."""
    return pickle.loads(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))


class InMemoryJobStore:
    """The JobStore port in a dict, with the Table store's semantics (tests/contracts/ checks both):
    time filters on the slot, VM names compared case-insensitively, newest slot first, paged with an
    opaque continuation, URLs kept without their query (never a SAS), updates atomic under threads."""

    MAX_PAGE = 1000

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.writes = 0
        self._lock = threading.RLock()
        self._by_shard: dict[str, dict[str, None]] = {}     # shard -> its jobs' ids (an ordered set)

    def _store(self, job: Job) -> None:
        """Keep ``job`` (under the lock), and its id under its VM's shard."""
        before = self.jobs.get(job.job_id)
        if before is not None and before.vm_name != job.vm_name:
            self._by_shard[shard_of(before.vm_name)].pop(job.job_id, None)
        self.jobs[job.job_id] = _as_stored(job)
        self._by_shard.setdefault(shard_of(job.vm_name), {})[job.job_id] = None

    def _candidates(self, query: JobQuery) -> Iterator[Job]:
        """The jobs ``query`` matches (under the lock); a shard's query reads that shard's jobs only, as the
        Table store reads one partition range."""
        if query.shard is None:
            found: Iterable[Job] = self.jobs.values()
        else:
            found = (self.jobs[job_id] for job_id in self._by_shard.get(query.shard, {}))
        return (job for job in found if query.matches(job))

    def create_if_absent(self, job: Job) -> bool:
        with self._lock:
            if job.job_id in self.jobs:
                return False
            self._store(job)
            self.writes += 1
            return True

    def create_many_if_absent(self, jobs: Sequence[Job]) -> list[bool]:
        return [self.create_if_absent(j) for j in jobs]

    def get(self, job_id: str) -> Job | None:
        job = self.jobs.get(job_id)
        return _copy(job) if job else None

    def get_many(self, job_ids: Sequence[str]) -> dict[str, Job]:
        return {job_id: job for job_id in job_ids if (job := self.get(job_id)) is not None}

    def update(self, job_id: str, change: Callable[[Job], Job | None]) -> Job:
        with self._lock:
            current = self.get(job_id)
            if current is None:
                raise NotFoundError(f"job {job_id} not found")
            changed = change(_copy(current))
            if changed is None:
                return current
            if changed.job_id != job_id:
                raise ValidationError("a job update cannot change the job id", field="job_id")
            self._store(changed)
            self.writes += 1
            return changed

    def query(self, query: JobQuery) -> JobPage:
        size = max(1, min(query.page_size, self.MAX_PAGE))
        after = _decode_token(query.continuation)
        with self._lock:
            jobs = sorted(self._candidates(query), key=_order)
        if after is not None:
            jobs = [j for j in jobs if _order(j) > after]
        page = [_copy(j) for j in jobs[:size]]
        token = _encode_token(_order(page[-1])) if len(page) == size else None
        return JobPage(jobs=page, continuation=token)


    def outcomes(self, query: JobQuery) -> list[JobOutcome]:
        with self._lock:
            jobs = [_copy(j) for j in self._candidates(query)]
        return [JobOutcome(job_id=j.job_id, vm_name=j.vm_name, slot=j.slot, status=j.status,
                           error=j.errors[0] if j.errors else None) for j in jobs]


def _order(job: Job) -> tuple[float, str]:
    """Newest slot first, then by id: the Table store's key order."""
    return -utc(job.slot).timestamp(), job.job_id


def _encode_token(key: tuple[float, str]) -> str:
    return json.dumps(list(key))


def _decode_token(token: str | None) -> tuple[float, str] | None:
    if not token:
        return None
    try:
        moment, job_id = json.loads(token)
        return float(moment), str(job_id)
    except (ValueError, TypeError) as exc:
        raise ValidationError("continuation token is not one this store issued", field="continuation") from exc


def _as_stored(job: Job) -> Job:
    """What the Table store keeps: URLs without their query, so no SAS survives a write."""
    stored = _copy(job)
    stored.status_blob = stored.status_blob and base_of(stored.status_blob)
    stored.log_blob = stored.log_blob and base_of(stored.log_blob)
    stored.disks = [replace(d, blob_url=base_of(d.blob_url or ""), snapshot_uri=without_secrets(d.snapshot_uri))
                    for d in stored.disks]
    return stored


class InMemoryBackupClaims:
    """The BackupClaims port in a dict, optimistic like the Table adapter: ``change`` runs on what was
    read, outside any lock, and the write lands only if the row's version is still the one read;
    otherwise it reads and changes again. So racing threads interleave as racing workers do."""

    def __init__(self) -> None:
        self.rows: dict[str, BackupClaim] = {}
        self._versions = itertools.count(1)
        self._lock = threading.Lock()

    def get(self, vm_name: str) -> BackupClaim:
        return self.rows.get(vm_name.lower()) or BackupClaim(vm_name=vm_name)

    def update(self, vm_name: str, change: Callable[[BackupClaim], BackupClaim | None]) -> BackupClaim:
        while True:
            current = self.get(vm_name)
            changed = change(current)
            if changed is None:
                return current
            with self._lock:
                if self.get(vm_name).version != current.version:
                    continue                        # lost the race: read and decide again
                stored = replace(changed, version=str(next(self._versions)))
                self.rows[vm_name.lower()] = stored
                return stored


class _RecordingQueue(Generic[M]):
    """Keeps sent messages; drops a second send of the same message id, as duplicate detection does."""

    def __init__(self) -> None:
        self.sent: list[M] = []
        self._ids: set[str] = set()
        self.operations = 0
        self._lock = threading.Lock()

    def send(self, messages: Sequence[M]) -> int:
        if not messages:
            return 0
        with self._lock:
            self.operations += 1
            for message in messages:
                if message.message_id not in self._ids:
                    self._ids.add(message.message_id)
                    self.sent.append(message)
        return 1


class RecordingTaskQueue(_RecordingQueue[SnapshotTask]):
    """The snapshot-tasks queue as a list."""


class RecordingShardQueue(_RecordingQueue[PlanRequest]):
    """The planner queue as a list."""


class _Drains:
    """A recording queue whose ``drain`` runs its worker on every message not run yet, those the worker
    sends (continuations) included, until none is left."""

    sent: list
    _lock: threading.Lock
    _done = 0

    LIMIT = 2000        # a worker that keeps continuing itself fails the test instead of hanging it

    def _drain(self, work: Callable[[object], object]) -> list:
        outcomes = []
        while True:
            with self._lock:
                if self._done >= len(self.sent):
                    return outcomes
                assert len(outcomes) < self.LIMIT, f"still not drained after {self.LIMIT} messages"
                message = self.sent[self._done]
                self._done += 1
            outcomes.append(work(message))


class RecordingRetentionQueue(_Drains, _RecordingQueue[RetentionRequest]):
    """The retention queue as a list; ``drain`` runs the part worker as the retention function would."""

    def drain(self, svc, **options) -> list:
        """The outcome of each request run, in order."""
        from shared.services.retention import retain_part

        return self._drain(lambda request: retain_part(svc, request, **options))


class RecordingDigestQueue(_Drains, _RecordingQueue[DigestRequest]):
    """The digest-requests queue as a list; ``drain`` runs the digests worker as its function would."""

    def drain(self, svc) -> list:
        from shared.services.point_data import record_point_digests

        return self._drain(lambda request: record_point_digests(svc, request))


class RecordingRestoreQueue(_Drains):
    """The restore queue as a list: keeps each task once (duplicate detection by message id); ``drain``
    runs the worker on every task not yet run, continuations included, as the restore function would."""

    def __init__(self) -> None:
        self.sent: list[tuple[RestoreTask, datetime | None]] = []
        self._ids: set[str] = set()
        self._lock = threading.Lock()

    def send(self, task: RestoreTask, *, not_before: datetime | None = None) -> None:
        with self._lock:
            if task.message_id not in self._ids:
                self._ids.add(task.message_id)
                self.sent.append((task, not_before))

    def drain(self, svc, **options) -> list:
        """The jobs the worker left, one per task run."""
        from shared.services.restore import run_restore

        return self._drain(lambda sent: run_restore(svc, sent[0], **options))


class InMemoryInventory:
    def __init__(self, *vms: Vm) -> None:
        self.vms = {vm.name.lower(): vm for vm in vms}

    def get_vm(self, name: str) -> Vm:
        try:
            return self.vms[name.lower()]
        except KeyError:
            raise NotFoundError(f"VM {name!r} is not in the inventory") from None

    def list_vms(self):
        return list(self.vms.values())


class RecordingDispatcher:
    """Keeps what it was handed; raises the queued errors first, one per call."""

    def __init__(self, *errors: Exception):
        self.sent = []
        self.errors = list(errors)

    def dispatch(self, vm, command):
        if self.errors:
            raise self.errors.pop(0)
        self.sent.append((vm, command))


class ReportingDispatcher(RecordingDispatcher):
    """A dispatcher that is also an ExtensionStatusReader: what each VM's handler last reported, by VM name
    (``reports``, lower-cased names); while ``outage`` is set, a read raises it (the control plane's answer)."""

    def __init__(self, *errors: Exception):
        super().__init__(*errors)
        self.reports: dict[str, bytes] = {}
        self.outage: Exception | None = None

    def extension_status(self, vm: Vm) -> bytes | None:
        if self.outage is not None:
            raise self.outage
        return self.reports.get(vm.name.lower())


class InMemoryStatusBlobs:
    """The StatusBlobs port in a dict, with StatusBlobStore's rules: an attempt's blobs are created
    empty, an empty one is reused, one the extension wrote to is never overwritten."""

    def __init__(self, account_url: str, container: str) -> None:
        self.account_url = account_url.rstrip("/")
        self.container = container
        self.rejected_container = f"{container}-rejected"
        self.blobs: dict[str, bytes] = {}
        self.rejected: dict[str, dict] = {}
        self._lock = threading.Lock()

    @staticmethod
    def attempt_blob_names(job_id: str, attempt: int) -> tuple[str, str]:
        return f"{job_id}/{attempt}.Status.txt", f"{job_id}/{attempt}.Logs.txt"

    def create_attempt_blobs(self, job_id: str, attempt: int) -> tuple[str, str]:
        names = self.attempt_blob_names(job_id, attempt)
        with self._lock:
            for name in names:
                if self.blobs.setdefault(name, b""):
                    raise ConflictError(f"status container {self.container} already holds a non-empty {name}; "
                                        f"the extension wrote there already, so attempt {attempt} cannot be reused")
        return names

    def read(self, name: str) -> bytes:
        try:
            return self.blobs[name]
        except KeyError:
            raise NotFoundError(f"blob {name} is not in container {self.container}") from None

    def url(self, name: str) -> str:
        return f"{self.account_url}/{self.container}/{quote(name, safe='/')}"

    def store_rejected(self, message_id: str, *, reason: str, body: bytes, delivery_count: int,
                       now: datetime) -> str:
        name = (quote(message_id, safe="-_.") or "no-message-id")[:200] + ".json"
        self.rejected[name] = {"messageId": message_id, "reason": redact(reason), "deliveryCount": delivery_count,
                               "rejectedAt": now.isoformat(), "body": redact(body.decode("utf-8", "replace"))}
        return name


class OutageJobStore:
    """A job store that is unreachable (TransientError on every call) until ``clock`` passes ``until``."""

    def __init__(self, inner, clock, until) -> None:
        self.inner, self.clock, self.until = inner, clock, until

    def __getattr__(self, attr):
        if self.clock.now() < self.until:
            raise TransientError("table storage unavailable")
        return getattr(self.inner, attr)


class FakeFileSystems:
    """The FileSystemReader port without debugfs: the superblock is read by the domain's parser, as the
    adapter reads it; every image's files are those in ``files`` (path -> content)."""

    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self.files = dict(files or {})

    def inspect(self, image: bytes, *, offset: int, probe: str | None) -> FileSystemCheck:
        found = ext_superblock(image[offset + EXT_SUPERBLOCK: offset + 2 * EXT_SUPERBLOCK])
        if found is None or probe is None:
            return found or FileSystemCheck(kind=None)
        if probe not in self.files:
            return replace(found, probe_error=f"{probe}: File not found by ext2_lookup")
        return replace(found, probe_content=self.files[probe])


class FakeSasMinter:
    """SAS-shaped URLs as the adapter mints them (one blob, the least permission, the dispatch window from a
    skewed start) under a signature nobody checks; a blob outside ``account_url`` gets none, as there."""

    def __init__(self, account_url: str, *, clock: Clock) -> None:
        self.account_url = account_url.rstrip("/") + "/"
        self._clock = clock

    def disk_sas_url(self, blob_url: str) -> str:
        return self._sas_url(blob_url, "c")

    def status_sas_url(self, blob_url: str) -> str:
        return self._sas_url(blob_url, "rw")

    def log_sas_url(self, blob_url: str) -> str:
        return self._sas_url(blob_url, "rw")

    def _sas_url(self, blob_url: str, permission: str) -> str:
        base = base_of(blob_url)
        if not base.startswith(self.account_url):
            raise PermanentError(f"blob {base} is not in storage account {self.account_url}, so no SAS can be minted")
        now = self._clock.now()
        window = {"st": now - timedelta(minutes=15), "se": now + EXTENSION_WINDOW + timedelta(minutes=30)}
        stamps = {k: v.strftime("%Y-%m-%dT%H:%M:%SZ") for k, v in window.items()}
        return f"{base}?{urlencode({'sv': '2025-01-05', **stamps, 'sr': 'b', 'sp': permission, 'sig': 'fake'})}"


class FakeDiskCopier:
    """The DiskCopier port on blobs in memory, ``account_url/container/name``: a copy completes at once,
    storage's rules kept (no blob replaced unless asked, a missing snapshot not found, a base blob never
    restored from, only its owner's blob deleted). ``put`` and ``snapshot`` play the disks being backed up."""

    def __init__(self, account_url: str = "http://127.0.0.1:10000/devstoreaccount1") -> None:
        self.account_url = account_url.rstrip("/")
        self.containers: set[str] = set()
        self.blobs: dict[tuple[str, str], tuple[bytes, dict[str, str]]] = {}
        self.snapshots: dict[tuple[str, str], dict[str, bytes]] = {}      # blob -> snapshot time -> bytes
        self.digests: set[str] = set()      # snapshots whose digest a verification recorded
        self._lock = threading.Lock()
        self._seq = itertools.count(1)

    def put(self, container: str, blob_name: str, data: bytes) -> str:
        with self._lock:
            self.containers.add(container)
            self.blobs[(container, blob_name)] = (data, {})
        return self.target_url(container, blob_name)

    def snapshot(self, container: str, blob_name: str) -> str:
        with self._lock:
            if (container, blob_name) not in self.blobs:
                raise NotFoundError(f"blob {container}/{blob_name} does not exist")
            stamp = f"2000-01-01T00:00:00.{next(self._seq):07d}Z"
            self.snapshots.setdefault((container, blob_name), {})[stamp] = self.blobs[(container, blob_name)][0]
        return f"{self.target_url(container, blob_name)}?snapshot={stamp}"

    def target_url(self, container: str, blob_name: str) -> str:
        return f"{self.account_url}/{container}/{quote(blob_name)}"

    def inspect(self, container: str, blob_name: str) -> RestoredBlob:
        with self._lock:
            if (container, blob_name) not in self.blobs:
                return RestoredBlob(exists=False)
            data, metadata = self.blobs[(container, blob_name)]
        return RestoredBlob(exists=True, owner=metadata.get(OWNER_KEY), copy_status="success",
                            bytes_done=len(data), bytes_total=len(data))

    def start_copy(self, snapshot_url: str, container: str, blob_name: str, *, owner: str,
                   replace: bool = False) -> None:
        data = self._snapshot_bytes(snapshot_url)
        with self._lock:
            self.containers.add(container)
            if (container, blob_name) in self.blobs and not replace:
                raise ConflictError(f"blob {container}/{blob_name} already exists")
            self.blobs[(container, blob_name)] = (data, {OWNER_KEY: owner})

    def delete_owned(self, container: str, blob_name: str, owner: str) -> bool:
        with self._lock:
            found = self.blobs.get((container, blob_name))
            if found is None or found[1].get(OWNER_KEY) != owner:
                return False
            del self.blobs[(container, blob_name)]
            self.snapshots.pop((container, blob_name), None)
            return True

    def safety_snapshot(self, container: str, blob_name: str, owner: str) -> str:
        return self.snapshot(container, blob_name)

    def restore_from(self, snapshot_url: str) -> None:
        data = self._snapshot_bytes(snapshot_url)
        with self._lock:
            key = self._locate(snapshot_url)
            self.blobs[key] = (data, self.blobs.get(key, (b"", {}))[1])

    def verify(self, snapshot_url: str, target_url: str) -> Verification:
        left, right = self._snapshot_bytes(snapshot_url), self._read(target_url)
        if len(left) != len(right):
            return Verification(False, len(right), 0, f"the copy has {len(right)} bytes, the snapshot {len(left)}")
        # The first verification of a snapshot records its digest, later ones use it (the bytes are here anyway).
        with self._lock:
            digest = "used" if snapshot_url in self.digests else "recorded"
            self.digests.add(snapshot_url)
        differ = next((i for i, (a, b) in enumerate(zip(left, right)) if a != b), None)
        if differ is not None:
            return Verification(False, len(left), len(left), f"the bytes differ from offset {differ}", digest=digest)
        return Verification(True, len(left), len(left), digest=digest)

    def record_digest(self, snapshot_url: str) -> Digested:
        try:
            self._snapshot_bytes(snapshot_url)
        except NotFoundError:
            return Digested.GONE
        with self._lock:
            if snapshot_url in self.digests:
                return Digested.PRESENT
            self.digests.add(snapshot_url)
            return Digested.RECORDED

    def read_range(self, url: str, offset: int, length: int) -> bytes:
        return self._read(url)[offset:offset + length]

    def list_owned(self, container: str, owner: str) -> list[str]:
        with self._lock:
            return sorted(name for (c, name), (_, meta) in self.blobs.items()
                          if c == container and meta.get(OWNER_KEY) == owner)

    def delete_container_if_empty(self, container: str) -> bool:
        with self._lock:
            if container not in self.containers or any(c == container for c, _ in self.blobs):
                return False
            self.containers.discard(container)
            return True

    def _locate(self, url: str) -> tuple[str, str]:
        container, _, name = base_of(url)[len(self.account_url) + 1:].partition("/")
        return container, unquote(name)

    def _read(self, url: str) -> bytes:
        if "snapshot=" in url:
            return self._snapshot_bytes(url)
        with self._lock:
            found = self.blobs.get(self._locate(url))
        if found is None:
            raise NotFoundError(f"{base_of(url)} does not exist")
        return found[0]

    def _snapshot_bytes(self, snapshot_url: str) -> bytes:
        stamp = next((p[len("snapshot="):] for p in snapshot_url.partition("?")[2].split("&")
                      if p.startswith("snapshot=")), "")
        if not stamp:
            raise ValidationError(f"{base_of(snapshot_url)} names no snapshot; base blobs are never restored from",
                                  field="snapshot")
        with self._lock:
            data = self.snapshots.get(self._locate(snapshot_url), {}).get(stamp)
        if data is None:
            raise NotFoundError(f"snapshot {base_of(snapshot_url)}?snapshot={stamp} no longer exists")
        return data


class FakeRestorePoints:
    """The RestorePoints port in memory, as the Compute API answers: ids are ARM ids, a restore point's
    create finishes at once (``fail_next``: the next creates fail with that ARM code), a disk restore point
    keeps its disk's bytes as they were, a restored disk or snapshot copies them, a read grant reads them
    (``granted``). ``add_vm`` plays a VM that exists in Azure."""

    GROUP = "/subscriptions/00000000-0000-0000-0000-0000000000fa/resourceGroups/rg/providers/Microsoft.Compute"

    def __init__(self) -> None:
        self.vms: dict[str, dict[int, str]] = {}                # VM id (lower) -> LUN -> disk id
        self.power: dict[str, str] = {}
        self.disks: dict[str, tuple[ManagedDiskState, bytes]] = {}    # disk or snapshot id (lower) -> state, bytes
        self.collections: dict[str, str] = {}                  # VM id (lower) -> collection id
        self.points: dict[str, RestorePointState] = {}         # restore point id (lower) -> state
        self.point_bytes: dict[str, bytes] = {}                # disk restore point id (lower) -> bytes
        self.failures: dict[str, ArmFailure] = {}              # operation -> its error
        self.fail_next: list[tuple[str, str]] = []
        self.granted: dict[str, bytes] = {}                    # read grant URL -> bytes
        self._lock = threading.RLock()
        self._seq = itertools.count(1)

    def add_vm(self, name: str, disks: dict[int, bytes]) -> str:
        """A running VM whose managed disk at each LUN holds the given bytes; returns its id."""
        vm_id = f"{self.GROUP}/virtualMachines/{name}"
        with self._lock:
            self.vms[vm_id.lower()] = {}
            for lun, data in disks.items():
                disk_id = f"{self.GROUP}/disks/{name}-{lun}"
                self.disks[disk_id.lower()] = (ManagedDiskState(disk_id, len(data), "local", "Succeeded"), data)
                self.vms[vm_id.lower()][lun] = disk_id
            self.power[vm_id.lower()] = "PowerState/running"
        return vm_id

    def ensure_collection(self, vm_resource_id: str, location: str) -> str:
        with self._lock:
            self._vm(vm_resource_id)
            name = collection_name(vm_resource_id.rsplit("/", 1)[1])
            return self.collections.setdefault(vm_resource_id.lower(),
                                               f"{vm_resource_id.split('/virtualMachines/')[0]}"
                                               f"/restorePointCollections/{name}")

    def begin_create(self, vm_resource_id: str, name: str, *, consistency: Consistency,
                     exclude_disk_ids: Sequence[str] = ()) -> RestorePointState:
        with self._lock:
            disks = self._vm(vm_resource_id)
            collection = _found_or_refused(self.collections.get(vm_resource_id.lower()),
                                           f"restore point collection of {vm_resource_id}")
            point_id = f"{collection}/restorePoints/{name}"
            if point_id.lower() in self.points:
                return self.points[point_id.lower()]
            operation = f"https://management.azure.com/operations/{next(self._seq)}"
            failed = self.fail_next.pop(0) if self.fail_next else None
            kept = []
            for disk_id in disks.values():
                if disk_id.lower() in (d.lower() for d in exclude_disk_ids):
                    continue
                drp = f"{point_id}/diskRestorePoints/{disk_id.rsplit('/', 1)[1]}"
                self.point_bytes[drp.lower()] = self.disks[disk_id.lower()][1]
                kept.append(DiskRestorePointState(drp, disk_id, "ReplicationState/succeeded", 100))
            if failed is not None:
                self.failures[operation] = ArmFailure(failed[0], failed[1], 409)
            mode = "CrashConsistent" if consistency is Consistency.CRASH else "ApplicationConsistent"
            self.points[point_id.lower()] = RestorePointState(
                name, point_id, "Failed" if failed else "Succeeded", mode, disks=() if failed else tuple(kept))
            return replace(self.points[point_id.lower()], provisioning_state="Creating", operation=operation)

    def get(self, vm_resource_id: str, name: str) -> RestorePointState | None:
        with self._lock:
            collection = self.collections.get(vm_resource_id.lower())
            return self.points.get(f"{collection}/restorePoints/{name}".lower()) if collection else None

    def operation_failure(self, operation: str) -> ArmFailure | None:
        return self.failures.get(operation)

    def vm_power_state(self, vm_resource_id: str) -> str | None:
        return self.power.get(vm_resource_id.lower())

    def delete(self, restore_point_id: str) -> bool:
        with self._lock:
            return self.points.pop(restore_point_id.lower(), None) is not None

    def restore_disk(self, disk_restore_point_id: str, disk_id: str, *, location: str,
                     tags: dict[str, str] | None = None) -> str:
        with self._lock:
            data = _found_or_refused(self.point_bytes.get(disk_restore_point_id.lower()),
                                     f"disk restore point {disk_restore_point_id}")
            owner = (tags or {}).get(OWNER_KEY)
            state = ManagedDiskState(disk_id, len(data), location, "Succeeded", owner=owner)
            self.disks[disk_id.lower()] = (state, data)
        return disk_id

    def delete_disk(self, disk_id: str) -> bool:
        with self._lock:
            return self.disks.pop(disk_id.lower(), None) is not None

    def grant_read(self, disk_id: str, seconds: int) -> str:
        with self._lock:
            url = f"https://md-fake.blob.core.windows.net/{disk_id.rsplit('/', 1)[1]}/abcd?sv=2024&sig=fake"
            self.granted[url] = self._disk(disk_id)[1]
        return url

    def revoke_read(self, disk_id: str) -> None:
        with self._lock:
            self.granted = {u: b for u, b in self.granted.items() if f"/{disk_id.rsplit('/', 1)[1]}/" not in u}

    def get_disk(self, disk_id: str) -> ManagedDiskState | None:
        found = self.disks.get(disk_id.lower())
        return found[0] if found else None

    def vm_disks(self, vm_resource_id: str) -> VmDisks | None:
        with self._lock:
            disks = self.vms.get(vm_resource_id.lower())
            return None if disks is None else VmDisks(dict(disks), "Succeeded", self.power[vm_resource_id.lower()])

    def swap_disks(self, vm_resource_id: str, disks: Mapping[int, str]) -> None:
        with self._lock:
            current = self._vm(vm_resource_id)
            for lun, disk_id in disks.items():
                self._disk(disk_id)
                current[lun] = disk_id

    def snapshot_disk(self, disk_id: str, snapshot_id: str, *, location: str, tags: dict[str, str]) -> str:
        with self._lock:
            state, data = self._disk(disk_id)
            self.disks[snapshot_id.lower()] = (ManagedDiskState(snapshot_id, len(data), location, "Succeeded",
                                                                owner=tags.get(OWNER_KEY)), data)
        return snapshot_id

    def get_snapshot(self, snapshot_id: str) -> ManagedDiskState | None:
        return self.get_disk(snapshot_id)

    def delete_snapshot(self, snapshot_id: str) -> bool:
        return self.delete_disk(snapshot_id)

    def _vm(self, vm_resource_id: str) -> dict[int, str]:
        return _found_or_refused(self.vms.get(vm_resource_id.lower()), f"VM {vm_resource_id}")

    def _disk(self, disk_id: str) -> tuple[ManagedDiskState, bytes]:
        return _found_or_refused(self.disks.get(disk_id.lower()), f"disk {disk_id}")


_Found = TypeVar("_Found")


def _found_or_refused(found: _Found | None, what: str) -> _Found:
    """What was found, or ARM's 404 as the Compute adapter raises it."""
    if found is None:
        raise RestorePointRefused(f"{what} not found", arm_code="ResourceNotFound",
                                  arm_message="The Resource was not found.", status=404)
    return found
