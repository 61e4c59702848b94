"""One rule for VM names in every command: a name that cannot be a VM (``a/b#c``) is a usage error,
exit 2 with one line naming the rule, before any setting is read or any storage is asked."""
from __future__ import annotations

import argparse

import pytest

from shared.cli import build_parser, main

HOSTILE = "a/b#c"
RULE = f"VM name '{HOSTILE}' is invalid; use 1-64 letters, digits, '-', '_' or '.'"


def _vm_arguments() -> list[tuple[list[str], str]]:
    """(command path, option) of every argument that names a VM, found by walking the parser: ``--vm``
    wherever it appears, and ``--name`` of ``local vm``."""
    found = []

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, [*path, name])
            elif action.dest == "vm" or (path[:2] == ["local", "vm"] and action.dest == "name"):
                found.append((path, action.option_strings[0]))

    walk(build_parser(), [])
    return found


VM_ARGUMENTS = _vm_arguments()


def test_the_walk_finds_the_commands_that_name_a_vm():
    """The commands the issue names are among those checked, so the walk cannot quietly find nothing."""
    paths = {" ".join(path) for path, _ in VM_ARGUMENTS}
    assert {"job list", "recoverypoint list", "recoverypoint show", "retention plan", "retention run",
            "restore restore-disks", "backup-now", "protection enable-for-vm", "local vm add"} <= paths


@pytest.mark.parametrize("path, option", VM_ARGUMENTS, ids=[" ".join(p) for p, _ in VM_ARGUMENTS])
def test_a_name_that_cannot_be_a_vm_is_a_usage_error(path, option, monkeypatch, tmp_path, capsys):
    """Exit 2 and one ERROR line naming the rule, whatever the command, with no settings at all."""
    monkeypatch.chdir(tmp_path)                       # no local.settings.json to read
    for setting in ("BackupStorage", "ServiceBusConnection"):
        monkeypatch.delenv(setting, raising=False)
    with pytest.raises(SystemExit) as exit_:
        main([*path, option, HOSTILE])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.count("\n") == 1 and err.startswith("ERROR: ") and RULE in err, err
