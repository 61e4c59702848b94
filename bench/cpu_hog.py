"""A busy machine on demand: N processes that spin on the CPU until stopped (Ctrl-C, SIGTERM) or for
``--seconds``. Run it beside tests or benchmarks to see what they do when they do not get the CPU;
in Python, ``with CpuHog(n): ...`` (``bench/chaos.py --busy N`` does).

    .venv/bin/python bench/cpu_hog.py [--processes 3] [--seconds 600]

The spinners end with the process that started them, however it ends (a SIGKILL included): each
checks, between bursts, that its parent is still the one that started it.
"""
from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
import time

# Spin while the parent that started this interpreter lives (a killed parent's orphans stop too).
SPIN = ("import os, signal\n"
        "signal.signal(signal.SIGINT, signal.SIG_DFL)\n"
        "parent = os.getppid()\n"
        "while os.getppid() == parent:\n"
        "    for _ in range(1_000_000): pass\n")


class CpuHog:
    """``processes`` interpreters each running a busy loop, killed and reaped when the block ends."""

    def __init__(self, processes: int):
        self.processes = max(0, processes)
        self._procs: list[subprocess.Popen] = []

    def start(self) -> "CpuHog":
        for _ in range(self.processes - len(self._procs)):
            self._procs.append(subprocess.Popen([sys.executable, "-c", SPIN], stdin=subprocess.DEVNULL))
        return self

    def stop(self) -> None:
        procs, self._procs = self._procs, []
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self._procs]

    def __enter__(self) -> "CpuHog":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/cpu_hog.py", description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=3, help="spinning processes (default 3)")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long (default: until stopped)")
    args = parser.parse_args(argv)
    if args.processes < 1:
        parser.error("--processes must be at least 1")
    stop = threading.Event()
    # SIGTERM ends the wait like Ctrl-C does, so the spinners are always stopped below.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    started = time.monotonic()
    with CpuHog(args.processes) as hog:
        print(f"cpu_hog: {hog.processes} spinning process(es), pids {' '.join(map(str, hog.pids))}",
              file=sys.stderr, flush=True)
        try:
            stop.wait(args.seconds)
        except KeyboardInterrupt:
            pass
    print(f"cpu_hog: stopped after {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
