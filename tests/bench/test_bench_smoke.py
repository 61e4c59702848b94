"""The benchmarks still run: each is started as a user starts it, with tiny numbers, so a change to
the code they drive cannot leave them broken unnoticed."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

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
    """bench_restore restores a point twice per run (first: digest recorded; later: digest used), the baseline
    first in one run and last in the other, and prints both ratios and where the later restore's time went."""
    out = _bench("bench_restore.py", "--sizes", "8", "--runs", "2")
    (row,) = [line for line in out.splitlines() if line.strip().startswith("8 MiB")]
    assert "MiB/s" in row and row.count(" / ") == 12       # five min / median / max, the time split in three
