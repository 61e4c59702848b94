"""vmsnap: the operator's tool, shaped like ``az backup`` (``-o table|json``, clear errors, exit codes).

Each command group lives in its own module with a ``register(subparsers)`` function; a command's
handler is ``handler(args, services) -> int | None`` and raises shared.errors on failure.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from azure.core.exceptions import AzureError

from shared.cli.output import EXIT_CONFIG, EXIT_OK, EXIT_USAGE, exit_code_for, fail
from shared.errors import VmsnapError

# Command-group modules, in help order. A module missing here is simply not offered.
GROUPS = ("shared.cli.policy", "shared.cli.protection", "shared.cli.job", "shared.cli.status",
          "shared.cli.local", "shared.cli.recoverypoint", "shared.cli.retention", "shared.cli.restore")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vmsnap", description="Back up VM disks with the VMSnapshot extension (az backup, for this service).")
    parser.add_argument("--debug", action="store_true", help="log what the command does (to stderr)")
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


def add_output_option(parser: argparse.ArgumentParser, default: str = "table") -> None:
    parser.add_argument("-o", "--output", choices=("table", "json"), default=default,
                        help=f"output format (default: {default})")


def _settings_from_local_file() -> None:
    """Like ``func start``: values in ./local.settings.json fill settings the environment lacks."""
    import json
    import os
    from pathlib import Path

    path = Path("local.settings.json")
    if not path.exists():
        return
    try:
        values = json.loads(path.read_text()).get("Values", {})
    except ValueError:
        return
    for name, value in values.items():
        os.environ.setdefault(name, str(value))


def main(argv: list[str] | None = None) -> int:
    _settings_from_local_file()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from shared.logs import configure_logging

    configure_logging()
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        # Arguments first: a missing id is a usage error even where no settings are configured.
        validate = getattr(args, "validate", None)
        if validate is not None:
            validate(args)
        from shared.bootstrap import services

        return handler(args, services()) or EXIT_OK
    except VmsnapError as exc:
        fail(str(exc))
        return exit_code_for(exc)
    except AzureError as exc:
        # The adapters translate what they expect; anything else reaching here is an unreachable or
        # misconfigured service, and the operator needs one line, not a traceback.
        fail(f"could not reach storage or Service Bus ({type(exc).__name__}: {_first_line(exc)}); "
             f"check the BackupStorage and ServiceBusConnection settings and that the services run")
        return EXIT_CONFIG
    except KeyboardInterrupt:
        fail("interrupted")
        return 130


def _first_line(exc: Exception) -> str:
    from shared.redaction import redact

    return redact(str(exc).strip().splitlines()[0] if str(exc).strip() else "no detail")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
