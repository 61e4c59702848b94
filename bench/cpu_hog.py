"""A busy machine on demand: N processes that spin on the CPU until stopped, so a benchmark or the
test suite can be run beside load (``with CpuHog(2): ...``, or ``python bench/cpu_hog.py 2`` next to
another command, Ctrl-C to stop). Nothing else: no nice level, no pinning, the spinners compete."""
from __future__ import annotations

import argparse
import signal
import subprocess
import sys

SPIN = "while True: pass"


class CpuHog:
    """``processes`` interpreters each running a busy loop, stopped (killed and reaped) on exit."""

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
    parser = argparse.ArgumentParser(prog="bench/cpu_hog.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("processes", type=int, nargs="?", default=2, help="spinning processes (default 2)")
    args = parser.parse_args(argv)
    # SIGTERM ends the run like Ctrl-C, so the spinners are stopped either way.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with CpuHog(args.processes) as hog:
        print(f"{hog.processes} spinning processes ({', '.join(map(str, hog.pids))}); Ctrl-C stops them",
              flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
