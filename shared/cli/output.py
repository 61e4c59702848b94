"""Output and errors for vmsnap, as az prints them: ``-o table|json|jsonc|tsv|yaml|none``, ``--query``
(JMESPath, the library az uses), one-line errors and stable exit codes."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Iterable, NoReturn, Sequence, TextIO, TypeAlias

# The commands' names for them (re-exported).
from shared.documents import format_duration as format_duration, format_time as format_time, to_jsonable as to_jsonable
from shared.errors import (ConfigurationError, ConflictError, NotFoundError, TransientError,
                           ValidationError, VmsnapError)

# Exit codes, documented in the README.
EXIT_OK = 0
EXIT_FAILED = 1          # the operation ran and reports failure (e.g. job wait on a failed job)
EXIT_USAGE = 2           # bad arguments or invalid input
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
EXIT_CONFIG = 5          # missing setting, unreachable service
EXIT_TRANSIENT = 6       # try again

# What a command module's ``register`` receives: the group parser's subcommands.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"   # not subscriptable at run time

FORMATS = ("table", "json", "jsonc", "tsv", "yaml", "none")
REPORT_FORMATS = FORMATS + ("csv",)     # reports also print as CSV, with a header row


def exit_code_for(exc: VmsnapError) -> int:
    for kind, code in ((ValidationError, EXIT_USAGE), (NotFoundError, EXIT_NOT_FOUND),
                       (ConflictError, EXIT_CONFLICT), (ConfigurationError, EXIT_CONFIG),
                       (TransientError, EXIT_TRANSIENT)):
        if isinstance(exc, kind):
            return code
    return EXIT_FAILED


# --- arguments --------------------------------------------------------------------------------

def choice(values: Iterable[str]) -> Callable[[str], str]:
    """An argparse ``type`` that accepts an enum value in any case, as az does (``--status failed``).

    Pair it with ``choices=values``: an unknown value passes through unchanged, so argparse's own
    message lists the valid ones."""
    canonical = {v.lower(): v for v in values}

    def convert(text: str) -> str:
        return canonical.get(text.strip().lower(), text)

    return convert


def name(what: str) -> Callable[[str], str]:
    """An argparse ``type`` for a VM, policy or job name: a name no store can key is a usage error."""
    from shared.domain.policy import check_name

    def convert(text: str) -> str:
        try:
            return check_name(text.strip(), what, what)
        except ValidationError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


# The type of every argument that names a VM, in every command (tests/cli/test_vm_names.py checks them
# all): a name that cannot be a VM is the same usage error everywhere, never a failed storage query.
vm_name = name("VM")


def add_vm_option(parser: argparse.ArgumentParser, help: str | None = None, *, required: bool = False,
                  aliases: Sequence[str] = ("--item-name",)) -> None:
    """``--vm`` (and az's ``--item-name`` for the item a command acts on, or the ``aliases`` given),
    into ``args.vm``, checked as a VM name."""
    parser.add_argument("--vm", *aliases, dest="vm", type=vm_name, required=required, help=help)


class Parser(argparse.ArgumentParser):
    """argparse, with az's one-line usage error (exit 2) instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        fail(f"{self.prog}: {message} (see {self.prog} --help)")
        raise SystemExit(EXIT_USAGE)


def add_output_option(parser: argparse.ArgumentParser, default: str = "table",
                      formats: Sequence[str] = FORMATS) -> None:
    """az's global output arguments, on one command: ``-o``, ``--query`` and ``--debug``."""
    parser.add_argument("-o", "--output", choices=formats, default=default, type=choice(formats),
                        help=f"output format: {', '.join(formats)} (default: {default})")
    parser.add_argument("--query", metavar="JMESPATH",
                        help="JMESPath query applied to the JSON output, as in az (e.g. \"[?status=='Failed'].name\")")
    # SUPPRESS: an absent --debug here must not undo a --debug given before the command.
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show what the command does, and the full chain of an error (stderr)")


def compile_query(args: argparse.Namespace) -> None:
    """Check ``--query`` before any service is called: a bad expression is a usage error (exit 2)."""
    text = getattr(args, "query", None)
    if text is None:
        return
    import jmespath
    from jmespath.exceptions import JMESPathError

    try:
        args.compiled_query = jmespath.compile(text)
    except JMESPathError as exc:
        raise ValidationError(f"--query: {text!r} is not a JMESPath expression ({_one_line(exc)})",
                              field="query") from exc


# --- rendering --------------------------------------------------------------------------------

def emit(args: argparse.Namespace, document: Any, table: Callable[[], None] | None = None) -> None:
    """Print a command's result: its JSON ``document`` in the chosen format, or ``table()``.

    ``--query`` applies to the document; with ``-o table`` a query result prints as a generic table."""
    output = getattr(args, "output", "table")
    document = to_jsonable(document)
    compiled = getattr(args, "compiled_query", None)
    if compiled is not None:
        from jmespath.exceptions import JMESPathError

        try:
            document = compiled.search(document)
        except JMESPathError as exc:
            raise ValidationError(f"--query: {_one_line(exc)}", field="query") from exc
    if output == "none":
        return
    if output == "table":
        if table is not None and compiled is None:
            table()
        else:
            _generic_table(document)
    elif output == "tsv":
        _tsv(document)
    elif output == "csv":
        _csv(document)
    elif output == "yaml":
        import yaml

        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)     # libyaml when present: much faster
        sys.stdout.write(yaml.dump(document, Dumper=dumper, sort_keys=False, allow_unicode=True,
                                   default_flow_style=False))
    else:
        emit_json(document, color=output == "jsonc" and sys.stdout.isatty())


def emit_json(value: Any, stream: TextIO | None = None, *, color: bool = False) -> None:
    stream = stream or sys.stdout
    text = json.dumps(to_jsonable(value), indent=2, sort_keys=False)
    if color:
        text = _colorize(text)
    stream.write(text + "\n")


def emit_table(rows: Iterable[Sequence[Any]], headers: Sequence[str], stream: TextIO | None = None) -> None:
    (stream or sys.stdout).write(table_text(list(rows), headers) + "\n")


def table_text(rows: Sequence[Sequence[Any]], headers: Sequence[str] = (), fmt: str = "simple") -> str:
    """``rows`` as a text table, cells as given (no number parsing). tabulate is loaded by the first table a
    process prints: a command asked for json, tsv or yaml never loads it."""
    from tabulate import tabulate

    return tabulate(rows, headers=list(headers), tablefmt=fmt, disable_numparse=True)


def fail(message: str, stream: TextIO | None = None) -> None:
    """Print an error the way az does: one line, starting with 'ERROR:'."""
    (stream or sys.stderr).write(f"ERROR: {message}\n")


def _generic_table(document: Any) -> None:
    """az's table for an arbitrary (queried) document: objects as rows of their scalar fields."""
    rows = document if isinstance(document, list) else [document]
    if not rows:
        return
    if all(isinstance(r, dict) for r in rows):
        headers: list[str] = []
        for row in rows:
            headers += [k for k, v in row.items() if _scalar(v) and k not in headers]
        emit_table([[_cell(r.get(h)) for h in headers] for r in rows], [_title(h) for h in headers])
    else:
        emit_table([[_cell(r)] for r in rows], ["Result"])


def _tsv(document: Any) -> None:
    """az's tsv: one line per object (its scalar values, tab-separated), nested values left out."""
    rows = document if isinstance(document, list) else [document]
    for row in rows:
        if isinstance(row, dict):
            values = [v for v in row.values() if _scalar(v)]
        elif isinstance(row, list):
            values = [v for v in row if _scalar(v)]
        else:
            values = [row]
        sys.stdout.write("\t".join(_cell(v) for v in values) + "\n")


def _csv(document: Any) -> None:
    """One row per object (its scalar fields, in the order of the first), under a header row."""
    import csv

    rows = document if isinstance(document, list) else [document]
    headers: list[str] = []
    for row in rows:
        if isinstance(row, dict):
            headers += [k for k, v in row.items() if _scalar(v) and k not in headers]
    writer = csv.writer(sys.stdout, lineterminator="\n")
    if headers:
        writer.writerow(headers)
        writer.writerows([[_cell(r.get(h)) if isinstance(r, dict) else _cell(r) for h in headers] for r in rows])
    else:
        writer.writerows([[_cell(r)] for r in rows])


def _scalar(value: Any) -> bool:
    return not isinstance(value, (dict, list))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) else json.dumps(value)


def _title(key: str) -> str:
    return key[:1].upper() + key[1:]


def _colorize(text: str) -> str:
    import re

    def paint(match: re.Match[str]) -> str:
        key, string, other = match.group(1), match.group(2), match.group(3)
        if key:
            return f"\033[94m{key}\033[0m:"
        if string:
            return f"\033[32m{string}\033[0m"
        return f"\033[36m{other}\033[0m"

    return re.sub(r'("(?:[^"\\]|\\.)*")\s*:|("(?:[^"\\]|\\.)*")|\b(true|false|null|-?\d+(?:\.\d+)?)\b', paint, text)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
