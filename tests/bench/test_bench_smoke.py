"""The benchmarks still run: each is started as a user starts it, with tiny numbers, so a change to
the code they drive cannot leave them broken unnoticed."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from devhost.processes import is_azurite, processes_in_group, stop_group
from tests.polling import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900), pytest.mark.long]

ROOT = Path(__file__).resolve().parents[2]


def _bench(script: str, *args: str) -> str:
    done = subprocess.run([sys.executable, f"bench/{script}", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=800)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_bench_table_batch_runs():
    """bench_table_batch writes its transactions of one partition and prints every way and phase."""
    out = _bench("bench_table_batch.py", "--entities", "2", "--runs", "3", "--top", "2")
    assert "submit_transaction: creates, 8 threads" in out and "HTTP round trip" in out


def test_bench_schedule_keeps_the_lock_of_a_shard_slower_than_the_lock():
    """A planner that spends longer on a shard than the queue's five-second lock keeps that lock: the
    run completes and every VM gets one job and one message (the bench checks both)."""
    out = _bench("bench_schedule.py", "--vms", "32", "--instances", "2", "--no-baseline",
                 "--lock-seconds", "5", "--slow-shard", "12")
    (row,) = [line for line in out.splitlines() if line.startswith("sharded, 2 planner instances")]
    assert row.split()[-2:] == ["32", "32"]          # jobs, messages


def test_bench_restore_runs_the_restores_and_their_baseline_in_both_orders():
    """bench_restore records a point's digest as after its backup, restores it twice per run (first, later)
    and a point with no digest once, the baseline first in one run and last in the other, and prints the
    three ratios and where the later restore's time went."""
    out = _bench("bench_restore.py", "--sizes", "8", "--runs", "2")
    (row,) = [line for line in out.splitlines() if line.strip().startswith("8 MiB")]
    assert "MiB/s" in row and row.count(" / ") == 18       # eight min / median / max, the time split in three


def test_bench_dashboard_serves_the_overview_computed_ahead_and_compliance_reads_the_rollup():
    """bench_dashboard loads the app with DASHBOARD_KEEP_WARM: once its warm-up is done the overview is served
    from it (the bench checks the page's counts against the report); bench_compliance reads the roll-up."""
    out = _bench("bench_dashboard.py", "--items", "6", "--days", "2", "--runs", "1")
    assert "warm-up done" in out and "items by state" in out and "first after loading" in out
    out = _bench("bench_compliance.py", "--items", "6", "--days", "2", "--runs", "1")
    assert "rebuilt the roll-up once: 12 jobs read" in out and "slots met" in out


def test_bench_schedule_compares_the_tick_with_both_baselines_planned_over_a_sample():
    """--baseline-sample: each baseline plans the first VMs of the seeded fleet one at a time, and the tick
    is compared with both per VM (the bench checks every planned VM got one job and one message)."""
    out = _bench("bench_schedule.py", "--vms", "24", "--instances", "0", "--baseline-sample", "6")
    rows = [line for line in out.splitlines() if "baseline" in line and "first 6 of 24 VMs" in line]
    assert len(rows) == 4, out          # both baselines in the table, and the tick compared with each
    assert all(line.split()[-2:] == ["6", "6"] for line in rows[:2]), rows


@pytest.mark.parametrize("when", ["while it starts", "once it serves"])
def test_a_bench_stopped_with_sigterm_stops_the_azurite_it_started(when):
    """`timeout` and `kill` send SIGTERM: the bench ends as on Ctrl-C, and the Azurite it started ends with
    it, whether it was still starting or already serving (before, it was left running on its ports)."""
    # Its own process group, so whatever the test leaves is stopped by the group; -u: its lines arrive as printed.
    proc = subprocess.Popen([sys.executable, "-u", "bench/bench_table_batch.py", "--entities", "100", "--runs", "500"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        if when == "once it serves":
            first = proc.stdout.readline()            # printed inside `with Azurite()`
            assert first.startswith("azure-data-tables"), first + proc.stderr.read()[-2000:]
        assert eventually(lambda: any(is_azurite(pid) for pid in processes_in_group(proc.pid)), timeout=120)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode != 0 and "KeyboardInterrupt" in err, err[-2000:]
        assert eventually(lambda: processes_in_group(proc.pid) == [], timeout=30), \
            [(pid, Path(f"/proc/{pid}/cmdline").read_text()) for pid in processes_in_group(proc.pid)]
    finally:
        stop_group(proc.pid)
        proc.wait(timeout=30)
