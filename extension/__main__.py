"""Command line, as WALA drives a handler (cwd = extension root, ``ConfigSequenceNumber`` set).

    python -m extension enable                  quick: checks, in-progress status, spawns the daemon
    python -m extension daemon                  the backup run (what enable spawns)
    python -m extension install|uninstall|disable|update    no-ops, exit 0 (as handle.sh)
    python -m extension run --settings-file FILE [--root DIR]   off Azure: everything, in the foreground
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from extension.enable import EnableResult, enable
from extension.layout import SEQ_ENV, HandlerEnvironment, LayoutError, resolve_seq
from extension.runlog import detach_run_logs, shell_log

DEFAULT_RUN_ROOT = "/var/lib/vmsnapshot-extension"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m extension", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("enable", help="start a backup run for the current sequence number")
    commands.add_parser("daemon", help="do the backup run (spawned by enable)")
    for name in ("install", "uninstall", "disable", "update"):
        commands.add_parser(name, help="no-op, as in the real handler")
    run = commands.add_parser("run", help="run settings from a file in the foreground (off Azure)")
    run.add_argument("--settings-file", required=True, type=Path,
                     help='JSON: {"publicSettings": {...}, "protectedSettings": {...}}')
    run.add_argument("--root", type=Path,
                     default=Path(os.environ.get("VMSNAP_EXTENSION_ROOT", DEFAULT_RUN_ROOT)),
                     help="extension root for state, status and logs (default %(default)s)")
    args = parser.parse_args(argv)

    if args.command in ("install", "uninstall", "disable", "update"):
        return 0
    if args.command == "run":
        return _run(args.settings_file, args.root)
    root = Path.cwd()
    try:
        env = HandlerEnvironment.load(root)
        seq = resolve_seq(env)
    except LayoutError as exc:
        print(f"extension {args.command}: {exc}", file=sys.stderr)
        return 1
    return _command(args.command, root, env, seq)


def _command(command: str, root: Path, env: HandlerEnvironment, seq: int) -> int:
    """``enable`` or ``daemon`` for sequence ``seq``, noted in shell.log as handle.sh notes each
    command it runs (the log's tail ends the log blob); returns the exit code."""
    shell_log(env.log_folder, f"{command}: sequence {seq}, python {_python_version()}")
    try:
        if command == "enable":
            shell_log(env.log_folder, f"enable: {enable(root, seq, spawn=_fork_daemon).value}")
        else:
            from extension.handler import run_daemon  # the daemon's modules: not on enable's path

            run_daemon(root, seq)
    except (LayoutError, OSError) as exc:  # OSError: the daemon could not be started
        shell_log(env.log_folder, f"{command}: exit 1")
        print(f"extension {command}: {exc}", file=sys.stderr)
        return 1
    shell_log(env.log_folder, f"{command}: exit 0")
    return 0


def _fork_daemon(root: Path, seq: int) -> None:
    """Start the daemon detached, as ``handle.sh daemon`` is started: in a session of its own, its
    output in ``daemon.log``, holding none of the agent's pipes, so enable returns at once.

    It is a fork of this enable process (which has no threads) rather than a new interpreter, so
    the daemon does not start Python and load enable's modules a second time on every command.
    The daemon begins once enable has exited, so the shell log shows enable's outcome first."""
    env = HandlerEnvironment.load(root)
    out = os.open(env.log_folder / "daemon.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    # Enable holds the write end until it exits; the daemon reads end-of-file then.
    enable_exited, enable_running = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        pid = os.fork()
    except OSError:
        for fd in (out, enable_exited, enable_running):
            os.close(fd)
        raise
    if pid:
        os.close(out)
        os.close(enable_exited)
        return
    # The child: it never returns into enable, whatever happens.
    code = 1
    try:
        os.close(enable_running)
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(null)
        os.close(out)
        detach_run_logs()       # enable's run log is enable's; the daemon keeps its own
        os.environ[SEQ_ENV] = str(seq)
        os.read(enable_exited, 1)
        os.close(enable_exited)
        code = _command("daemon", root, env, seq)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _python_version() -> str:
    return ".".join(str(part) for part in sys.version_info[:3])


def _run(settings_file: Path, root: Path) -> int:
    from extension.handler import run_foreground

    try:
        decision, element = run_foreground(settings_file, root)
    except (OSError, ValueError, LayoutError) as exc:
        print(f"extension run: {exc}", file=sys.stderr)
        return 1
    if decision is not EnableResult.STARTED:
        print(f"extension run: {decision.value} (send a new taskId to back up again)", file=sys.stderr)
        return 0
    if not element:
        print("extension run: no status was produced (is vmType missing?); see the log folder", file=sys.stderr)
        return 1
    print(json.dumps(element, indent=2))
    return 0 if element["status"]["status"] == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
