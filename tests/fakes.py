"""In-memory fakes of the ports, for unit tests of services (state assertions, not call counts).

They keep the ports' semantics that services rely on: insert-if-absent, read-modify-write with a
version check, duplicate detection by message id.
"""
from __future__ import annotations

import copy
from typing import Callable, Sequence

from shared.domain.inventory import Vm
from shared.domain.jobs import Job
from shared.domain.task import SnapshotTask
from shared.errors import NotFoundError
from shared.ports import JobPage, JobQuery


class InMemoryJobStore:
    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.writes = 0

    def create_if_absent(self, job: Job) -> bool:
        if job.job_id in self.jobs:
            return False
        self.jobs[job.job_id] = copy.deepcopy(job)
        self.writes += 1
        return True

    def create_many_if_absent(self, jobs: Sequence[Job]) -> list[bool]:
        return [self.create_if_absent(j) for j in jobs]

    def get(self, job_id: str) -> Job | None:
        job = self.jobs.get(job_id)
        return copy.deepcopy(job) if job else None

    def update(self, job_id: str, change: Callable[[Job], Job | None]) -> Job:
        current = self.get(job_id)
        if current is None:
            raise NotFoundError(f"job {job_id} not found")
        changed = change(copy.deepcopy(current))
        if changed is None:
            return current
        self.jobs[job_id] = copy.deepcopy(changed)
        self.writes += 1
        return changed

    def query(self, query: JobQuery) -> JobPage:
        jobs = [j for j in self.jobs.values()
                if (query.vm_name is None or j.vm_name == query.vm_name)
                and (query.status is None or j.status == query.status)
                and (query.operation is None or j.operation == query.operation)
                and (query.since is None or j.start_time >= query.since)
                and (query.until is None or j.start_time < query.until)]
        jobs.sort(key=lambda j: j.start_time, reverse=True)
        return JobPage(jobs=[copy.deepcopy(j) for j in jobs[: query.page_size]])


class RecordingTaskQueue:
    """Keeps sent tasks; drops a second send of the same message id, as duplicate detection does."""

    def __init__(self) -> None:
        self.sent: list[SnapshotTask] = []
        self._ids: set[str] = set()
        self.operations = 0

    def send(self, tasks: Sequence[SnapshotTask]) -> int:
        if not tasks:
            return 0
        self.operations += 1
        for task in tasks:
            if task.message_id not in self._ids:
                self._ids.add(task.message_id)
                self.sent.append(task)
        return 1


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
