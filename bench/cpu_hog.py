"""A busy machine on demand: N processes that spin on the CPU until stopped (Ctrl-C, SIGTERM) or for
``--seconds``. Run it beside tests or benchmarks to see what they do when they do not get the CPU.

    .venv/bin/python bench/cpu_hog.py [--processes 3] [--seconds 600]

The spinners end with their parent, however it ends (a SIGKILL included): each checks, between
bursts, that its parent is still the one that started it.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import sys
import time


def spin(parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)      # the parent decides when to stop; no traceback here
    value = 0
    while os.getppid() == parent:
        for _ in range(1_000_000):
            value = (value * 1103515245 + 12345) & 0x7FFFFFFF


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=3, help="spinning processes (default 3)")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long (default: until stopped)")
    args = parser.parse_args(argv)
    if args.processes < 1:
        parser.error("--processes must be at least 1")
    spinners = [multiprocessing.Process(target=spin, args=(os.getpid(),), daemon=True, name=f"cpu-hog-{n}")
                for n in range(args.processes)]
    for process in spinners:
        process.start()
    print(f"cpu_hog: {args.processes} spinning process(es), pids {' '.join(str(p.pid) for p in spinners)}",
          file=sys.stderr, flush=True)
    started = time.monotonic()
    # Wait for SIGTERM or SIGINT (or the time limit) without a handler: nothing runs inside a wait.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    try:
        if args.seconds is None:
            signal.sigwait(stop_signals)
        else:
            signal.sigtimedwait(stop_signals, args.seconds)
    finally:
        for process in spinners:
            process.terminate()
        for process in spinners:
            process.join(timeout=10)
    print(f"cpu_hog: stopped after {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
