"""The whole suite, again and again, beside a CPU hog: does ``./dev test`` stay green on a busy machine?

Starts ``bench/cpu_hog.py``, runs ``./dev test`` (or the tier and pytest arguments given after ``--``)
``--runs`` times, one after the other, and prints each run's outcome, duration and failed tests, then
a summary; the hog is stopped at the end, also on Ctrl-C. Each run is a process group of its own,
stopped whole if the soak is interrupted, so no Azurite outlives it. Exit 0 only if every run passed.

    .venv/bin/python bench/soak_suite.py [--runs 10] [--hog 3] [--log-dir .local/soak] [-- integration -k x]
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devhost.processes import stop_group  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
_FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.M)
# pytest's last line: "=== 3 passed in 1.2s ===", or bare under -q ("3 passed in 1.2s").
_SUMMARY = re.compile(r"^(?:=+ )?(\d+ (?:passed|failed|error).*?) in [\d.]+s", re.M)


def _started(argv: list[str], log: Path | None = None) -> subprocess.Popen:
    out = log.open("w") if log else subprocess.DEVNULL
    return subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs of the suite (default 10)")
    parser.add_argument("--hog", type=int, default=3, help="spinning processes beside it (default 3; 0: none)")
    parser.add_argument("--log-dir", type=Path, default=ROOT / ".local" / "soak", help="each run's full output")
    parser.add_argument("suite", nargs=argparse.REMAINDER, help="after --: what ./dev test is given")
    args = parser.parse_args(argv)
    suite = args.suite[1:] if args.suite[:1] == ["--"] else args.suite
    args.log_dir.mkdir(parents=True, exist_ok=True)
    # The runs get a terminal's Ctrl-C even when the soak itself was started as a background command
    # (`nohup ... &`), which inherits SIGINT ignored and would pass that on to every process below it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    hog = _started([sys.executable, "bench/cpu_hog.py", "--processes", str(args.hog)]) if args.hog else None
    results: list[tuple[int, float, list[str]]] = []
    print(f"soak: ./dev test {' '.join(suite)} x{args.runs}, beside {args.hog} spinning process(es) "
          f"on {os.cpu_count()} CPU(s); logs in {args.log_dir}", flush=True)
    try:
        for run in range(1, args.runs + 1):
            log = args.log_dir / f"run-{run:02d}.log"
            started = time.monotonic()
            proc = _started(["./dev", "test", *suite], log)
            try:
                code = proc.wait()
            finally:
                stop_group(proc.pid)        # interrupted, or something it started outlived it
            seconds = time.monotonic() - started
            text = log.read_text(errors="replace")
            failed = _FAILED.findall(text)
            summary = _SUMMARY.findall(text)
            results.append((code, seconds, failed))
            print(f"run {run:2d}: {'pass' if code == 0 else f'FAIL (exit {code})'}  {seconds:6.0f} s  "
                  f"{summary[-1] if summary else 'no pytest summary'}"
                  + "".join(f"\n        {name}" for name in failed), flush=True)
    except KeyboardInterrupt:
        print("soak: interrupted", flush=True)
    finally:
        if hog is not None:
            stop_group(hog.pid)
            hog.wait()
    if not results:
        return 1
    passed = sum(1 for code, _, _ in results if code == 0)
    durations = [seconds for _, seconds, _ in results]
    print(f"soak: {passed}/{len(results)} green; duration min/median/max "
          f"{min(durations):.0f} / {statistics.median(durations):.0f} / {max(durations):.0f} s")
    return 0 if passed == len(results) == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
