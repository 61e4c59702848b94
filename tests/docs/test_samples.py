"""The sample outputs in docs/jobs.md are what vmsnap prints: each block marked ``<!-- sample: SCENARIO -->``
is a session (``$ vmsnap ...`` lines, each followed by its output and, when not 0, ``(exit N)``) replayed
through ``shared.cli.main`` on the jobs of that scenario (the status-blob corpus applied through the domain,
in memory), and must print exactly what the page shows.

After a deliberate change of the output: ``.venv/bin/python -m tests.docs.test_samples`` rewrites the
outputs in place (the commands stay), then read the diff.
"""
from __future__ import annotations

import contextlib
import io
import re
import shlex
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from shared.bootstrap import reset_services
from shared.cli import main
from shared.domain.job_transitions import mark_dispatched
from shared.domain.jobs import Job
from tests.jobs.helpers import DISPATCHED, FINAL_AT, SLOT, STARTED, fake_services, finished_job, retried_job

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "jobs.md"
SAMPLE = re.compile(r"<!-- sample: ([a-z]+) -->\n```(\w+)\n(.*?)\n```", re.S)
NOW = FINAL_AT + timedelta(minutes=10)
FAILED_BLOB = "06-failed-partial-76-761.txt"


def at(hour: int, minute: int, second: int) -> datetime:
    return datetime(2025, 3, 1, hour, minute, second, tzinfo=timezone.utc)


# app-01's attempts, each (dispatched, reported): retried 5 minutes after the first, 15 after the second.
APP_ATTEMPTS = [(DISPATCHED, FINAL_AT), (at(2, 8, 42), at(2, 15, 41)), (at(2, 30, 41), at(2, 33, 41))]


def scenario(name: str) -> list[Job]:
    """final: a completed, a warned and a failed (third attempt) job, and one queued; retrying: the
    failed job waiting for its second attempt; stop: a queued job and one the extension has."""
    queued = Job.new_backup(vm_name="web-02", slot=SLOT + timedelta(hours=1), now=SLOT + timedelta(hours=1, seconds=3),
                            policy_name="DefaultPolicy")
    if name == "final":
        return [finished_job("web-01", "02-completed-fs-two-disks.txt", NOW),
                finished_job("db-01", "05-warning-prescript-failed.txt", NOW),
                retried_job("app-01", FAILED_BLOB, APP_ATTEMPTS), queued]
    if name == "retrying":
        return [retried_job("app-01", FAILED_BLOB, APP_ATTEMPTS[:1])]
    if name == "stop":
        running = Job.new_backup(vm_name="db-02", slot=SLOT, now=STARTED, policy_name="DefaultPolicy")
        running = mark_dispatched(running, attempt=1, task_id=f"{running.job_id}_1",
                                  status_blob=f"{running.job_id}/1.Status.txt", log_blob=f"{running.job_id}/1.Logs.txt",
                                  now=DISPATCHED)
        return [queued, running]
    raise ValueError(f"no sample scenario {name!r}")


def replay(name: str, session: str) -> str:
    """The session's commands run on a fresh copy of the scenario, with what each printed."""
    services = fake_services(now=NOW)
    services.jobs.create_many_if_absent(scenario(name))
    reset_services(services)
    out: list[str] = []
    try:
        for command in [line[2:] for line in session.splitlines() if line.startswith("$ vmsnap ")]:
            stdout, stderr = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                code = main(shlex.split(command)[1:])
            printed = (stdout.getvalue() + stderr.getvalue()).rstrip("\n")
            out.append("\n".join(filter(None, [f"$ {command}", printed, f"(exit {code})" if code else ""])))
    finally:
        reset_services(None)
    return "\n\n".join(out)


def normal(text: str) -> str:
    # Tables pad their last column; the page does not keep trailing blanks.
    return "\n".join(line.rstrip() for line in text.splitlines())


def samples() -> list[tuple[str, str, str]]:
    return SAMPLE.findall(PAGE.read_text())


def test_the_page_marks_its_samples():
    assert {name for name, _, _ in samples()} == {"final", "retrying", "stop"}
    assert len(samples()) >= 8


@pytest.mark.parametrize("index", range(len(samples())))
def test_a_sample_prints_what_the_page_shows(index):
    name, _, session = samples()[index]
    assert normal(replay(name, session)) == normal(session)


def test_the_replay_catches_a_changed_output():
    """A page line vmsnap does not print fails the comparison."""
    name, _, session = samples()[0]
    changed = session.replace("Completed", "Complete", 1)
    assert changed != session and normal(replay(name, changed)) != normal(changed)


def write_samples() -> None:
    text = PAGE.read_text()
    text = SAMPLE.sub(lambda m: f"<!-- sample: {m.group(1)} -->\n```{m.group(2)}\n"
                                f"{normal(replay(m.group(1), m.group(3)))}\n```", text)
    PAGE.write_text(text)


if __name__ == "__main__":
    write_samples()
