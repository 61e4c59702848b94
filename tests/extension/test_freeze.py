"""FsFreezeFreezer and mount selection, with a recording command runner: nothing is ever frozen."""
from __future__ import annotations

import subprocess
import threading
import time

import pytest

from extension.codes import ExtensionCode
from extension.freeze import CommandResult, FreezeError, FsFreezeFreezer, freeze_mounts


class FakeFsFreeze:
    """Stands in for util-linux fsfreeze: records argv, fails where told to."""

    def __init__(self, results: dict[tuple[str, str], object] | None = None):
        self.calls: list[tuple[str, ...]] = []
        self.results = results or {}
        self.lock = threading.Lock()

    def __call__(self, argv, timeout):
        with self.lock:
            self.calls.append(tuple(argv))
        outcome = self.results.get((argv[1], argv[2]), CommandResult(0))
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def test_mounts_are_frozen_in_order_and_thawed_in_reverse():
    """Freeze /data then /, thaw / then /data, and report a clean thaw."""
    fake = FakeFsFreeze()
    freezer = FsFreezeFreezer(fake)

    freezer.freeze(["/data", "/"], timeout=60)
    clean = freezer.thaw()

    assert clean is True
    assert fake.calls == [
        ("fsfreeze", "--freeze", "/data"),
        ("fsfreeze", "--freeze", "/"),
        ("fsfreeze", "--unfreeze", "/"),
        ("fsfreeze", "--unfreeze", "/data"),
    ]


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (CommandResult(1, "fsfreeze: /: Device or resource busy"), ExtensionCode.FailedRetryableFsFreezeFailed),
        (CommandResult(1, "fsfreeze: cannot open /: No such file"), ExtensionCode.FailedRetryableUnableToOpenMount),
        (subprocess.TimeoutExpired("fsfreeze", 66), ExtensionCode.FailedRetryableFsFreezeTimeout),
    ],
)
def test_a_failed_freeze_thaws_what_was_frozen_and_names_the_cause(failure, code):
    """A failure on the second mount thaws the first and raises 121, 123 or 122."""
    fake = FakeFsFreeze({("--freeze", "/"): failure})
    freezer = FsFreezeFreezer(fake)

    with pytest.raises(FreezeError) as caught:
        freezer.freeze(["/data", "/"], timeout=60)

    assert caught.value.code == code
    assert fake.calls[-1] == ("fsfreeze", "--unfreeze", "/data")
    assert ("fsfreeze", "--unfreeze", "/") not in fake.calls


def test_the_watchdog_thaws_when_the_snapshot_hangs():
    """Past the self-thaw deadline everything is thawed without the caller, and thaw() reports it."""
    fake = FakeFsFreeze()
    freezer = FsFreezeFreezer(fake)

    freezer.freeze(["/data"], timeout=0.2)
    deadline = time.monotonic() + 5
    while ("fsfreeze", "--unfreeze", "/data") not in fake.calls and time.monotonic() < deadline:
        time.sleep(0.02)

    assert ("fsfreeze", "--unfreeze", "/data") in fake.calls
    assert freezer.thaw() is False
    assert fake.calls.count(("fsfreeze", "--unfreeze", "/data")) == 1


def test_a_thaw_in_time_stops_the_watchdog():
    """A prompt thaw cancels the deadline: no second unfreeze later."""
    fake = FakeFsFreeze()
    freezer = FsFreezeFreezer(fake)

    freezer.freeze(["/data"], timeout=1.0)
    assert freezer.thaw() is True
    time.sleep(1.3)

    assert fake.calls.count(("fsfreeze", "--unfreeze", "/data")) == 1


PROC_MOUNTS = """\
/dev/sda1 / ext4 rw,relatime 0 0
proc /proc proc rw 0 0
/dev/sdb1 /mnt/resource ext4 rw 0 0
/dev/sdc1 /data xfs rw 0 0
/dev/loop0 /snap/core squashfs ro 0 0
/dev/loop1 /loopfs ext4 rw 0 0
/dev/sdd1 /my\\040disk btrfs rw 0 0
tmpfs /run tmpfs rw 0 0
"""


def test_nothing_is_frozen_unless_mounts_are_configured():
    """Without VMSNAP_FREEZE_MOUNTS the handler freezes nothing (the local default)."""
    assert freeze_mounts({}, [], PROC_MOUNTS) == []


def test_auto_selects_mounts_like_the_real_handler():
    """``auto``: ext/xfs/btrfs, no loop devices, MountsToSkip dropped, reversed, / last."""
    env = {"VMSNAP_FREEZE_MOUNTS": "auto"}

    assert freeze_mounts(env, ["/mnt/resource"], PROC_MOUNTS) == ["/my disk", "/data", "/"]


def test_an_explicit_mount_list_honours_mounts_to_skip():
    """A named list is used as given, minus MountsToSkip."""
    env = {"VMSNAP_FREEZE_MOUNTS": "/data, /scratch ,/"}

    assert freeze_mounts(env, ["/scratch"], PROC_MOUNTS) == ["/data", "/"]
