"""vmsnap: the operator's tool, shaped like ``az backup`` (``-o``/``--query``, clear errors, exit codes).

Each command group lives in its own module with a ``register(subparsers)`` function; a command's
handler is ``handler(args, services) -> int | None`` and raises shared.errors on failure.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from shared.cli.output import EXIT_OK, Parser, add_output_option, compile_query, fail

__all__ = ["main", "add_output_option", "STACK_SETTINGS"]

# Command-group modules, in help order. A module missing here is simply not offered.
GROUPS = ("shared.cli.policy", "shared.cli.protection", "shared.cli.job", "shared.cli.status",
          "shared.cli.local", "shared.cli.recoverypoint", "shared.cli.retention", "shared.cli.restore",
          "shared.cli.restore_test", "shared.cli.alert", "shared.cli.report")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="vmsnap", description="Back up VM disks with the VMSnapshot extension (az backup, for this service).")
    parser.add_argument("--debug", action="store_true",
                        help="show what the command does, and the full chain of an error (stderr)")
    sub = parser.add_subparsers(dest="group", metavar="<group>")
    for module_name in GROUPS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        module.register(sub)
    return parser


# Written by `./dev run` while its stack runs: the settings of the ports it really took.
STACK_SETTINGS = Path(".local") / "stack.settings.json"


def _settings_from_local_file() -> None:
    """Like ``func start``: values fill settings the environment lacks. A running ``./dev run`` stack's
    file comes first (its ports are the ones in use), then ./local.settings.json."""
    stack_values, stack_pid = _read_values(STACK_SETTINGS)
    sources = [stack_values] if _alive(stack_pid) else []      # a file left by a stack that is gone: ignored
    sources.append(_read_values(Path("local.settings.json"))[0])
    for values in sources:
        for name, value in values.items():
            os.environ.setdefault(name, str(value))


def _read_values(path: Path) -> tuple[dict[str, Any], object]:
    """The file's ``Values`` and ``Pid``; an absent or unreadable file gives none (settings it would have
    given are then reported missing, naming the setting)."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}, None
    values = document.get("Values") if isinstance(document, dict) else None
    return (values if isinstance(values, dict) else {}), document.get("Pid") if isinstance(document, dict) else None


def _alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure ends as one ``ERROR:`` line and a documented exit code."""
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        return _run(argv)
    except BrokenPipeError:
        # The reader (``| head``) has what it wanted; say nothing more, and keep Python's exit-time
        # flush of stdout from failing again on the closed pipe.
        _detach_stdout()
        return EXIT_OK
    except KeyboardInterrupt:
        fail("interrupted")
        return 130
    except Exception as exc:    # the last line of defence: reported, never swallowed
        from shared.cli.failures import describe

        if debug:
            from shared.redaction import redact

            sys.stderr.write(redact(traceback.format_exc()))     # a SAS in a URL stays hidden here too
        failure = describe(exc)
        fail(failure.message)
        return failure.exit_code


def _run(argv: list[str] | None) -> int:
    _settings_from_local_file()
    parser = build_parser()
    args = parser.parse_args(argv)
    # Without --debug the one ERROR line is the whole story: service log lines would say it twice.
    logging.basicConfig(level=logging.INFO if getattr(args, "debug", False) else logging.CRITICAL,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from shared.logs import SDK_LOG_SETTING, configure_logging

    # --debug shows the SDKs' requests too; the app keeps them out unless SDK_LOG_LEVEL asks.
    configure_logging(env={**os.environ, SDK_LOG_SETTING: "DEBUG"} if getattr(args, "debug", False) else None)
    handler = getattr(args, "handler", None)
    if handler is None:
        named = _parser_of(parser, args)
        if named is parser:
            parser.print_help(sys.stdout)       # bare `vmsnap`, like bare `az`: what there is to do
            return EXIT_OK
        named.error("give a command: " + ", ".join(_commands_of(named)))
    # Arguments first: a missing id or a bad --query is a usage error even where no settings exist.
    compile_query(args)
    validate = getattr(args, "validate", None)
    if validate is not None:
        validate(args)
    if getattr(args, "needs_services", True):
        from shared.bootstrap import services

        svc = services()
    else:
        svc = None
    code = handler(args, svc) or EXIT_OK
    sys.stdout.flush()      # a closed pipe shows here, inside main, not at interpreter exit
    return code


def _parser_of(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The deepest (sub)parser the user named, so ``vmsnap job`` prints the job commands."""
    current = parser
    for dest in ("group", "command", "vm_command"):
        name = getattr(args, dest, None)
        actions = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        if not name or not actions or name not in actions[0].choices:
            break
        current = actions[0].choices[name]
    return current


def _commands_of(parser: argparse.ArgumentParser) -> list[str]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(actions[0].choices) if actions else []


def _detach_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass    # stdout is not a real file (tests capture it); nothing will flush into a closed pipe


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
