"""Ports: the small interfaces services depend on. Adapters implement them; tests use fakes.

Each port is owned by the work that implements its adapter; add methods here, never SDK types.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Iterable, Protocol, Sequence

from shared.domain.inventory import Vm
from shared.domain.jobs import Job, JobStatus
from shared.domain.task import SnapshotTask


class TaskQueue(Protocol):
    """The snapshot-tasks queue (Service Bus in Azure and locally)."""

    def send(self, tasks: Sequence[SnapshotTask]) -> int:
        """Send tasks in as few operations as the queue allows; returns how many operations it took.

        ``message_id`` is the task's ``message_id`` (duplicate detection); a task whose
        ``not_before`` lies ahead is scheduled for that time.
        """


class Inventory(Protocol):
    """Where VMs and their disks are looked up (local inventory table, or the Compute API)."""

    def get_vm(self, name: str) -> Vm:
        """The VM, or NotFoundError with a message naming it."""

    def list_vms(self) -> Iterable[Vm]: ...


@dataclass(frozen=True)
class JobQuery:
    vm_name: str | None = None
    status: JobStatus | None = None
    operation: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    page_size: int = 50
    continuation: str | None = None


@dataclass
class JobPage:
    jobs: list[Job] = field(default_factory=list)
    continuation: str | None = None


class JobStore(Protocol):
    def create_if_absent(self, job: Job) -> bool:
        """Insert the job unless one with its id exists; True if this call created it."""

    def create_many_if_absent(self, jobs: Sequence[Job]) -> list[bool]:
        """Batched insert-if-absent (Table transactions of up to 100 per partition)."""

    def get(self, job_id: str) -> Job | None: ...

    def update(self, job_id: str, change: Callable[[Job], Job | None]) -> Job:
        """Read, apply ``change`` (None = no change), write back guarded by the ETag; retry on races."""

    def query(self, query: JobQuery) -> JobPage: ...


class Dispatcher(Protocol):
    """Hands an extension command to a VM and returns once it is accepted (never waits for the snapshot)."""

    def dispatch(self, vm: Vm, command: "object") -> None: ...
