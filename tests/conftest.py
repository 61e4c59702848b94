"""Shared fixtures: one Azurite and one local Service Bus per test session (real parts, not mocks),
and per-test Settings with their own table prefix and container so tests never see each other's data.

Also the test tiers (docs/testing.md): every test is ``unit``, ``integration`` or ``e2e``, decided
here from the fixtures it uses and its folder; a unit test that opens a socket or starts a process fails.
"""
from __future__ import annotations

import _posixsubprocess
import itertools
import multiprocessing.process
import os
import platform
import socket
import subprocess
from pathlib import Path

import pytest
from hypothesis import settings

from devhost.azurite import Azurite
from shared.settings import Settings
from tests.properties import UNIT_PROFILE

_counter = itertools.count(1)


@pytest.fixture(scope="session")
def azurite():
    with Azurite() as instance:
        yield instance


@pytest.fixture(scope="session")
def storage_connection_string(azurite) -> str:
    return azurite.connection_string


@pytest.fixture(scope="session")
def local_servicebus():
    from devhost.servicebus import LocalServiceBus, QueueOptions
    from datetime import timedelta

    server = LocalServiceBus(default_queue_options=QueueOptions(
        lock_duration=timedelta(seconds=5), max_delivery_count=3,
        duplicate_detection_window=timedelta(minutes=10)))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def unique_name():
    """A short name unique within the session: table prefixes, containers, queues."""
    return lambda stem="t": f"{stem}{os.getpid() % 1000}x{next(_counter)}"


@pytest.fixture
def make_settings(storage_connection_string, unique_name, tmp_path: Path):
    """Settings on the session's Azurite, isolated per test (own tables, container, queue, VM root)."""

    def factory(service_bus: str = "Endpoint=sb://127.0.0.1:1;SharedAccessKeyName=x;SharedAccessKey=y;"
                                    "UseDevelopmentEmulator=true;", **env) -> Settings:
        name = unique_name("v")
        base = {
            "BackupStorage": storage_connection_string,
            "ServiceBusConnection": service_bus,
            "TABLE_PREFIX": name,
            "STATUS_CONTAINER": f"status-{name}",
            "SNAPSHOT_TASKS_QUEUE": f"tasks-{name}",
            "LOCAL_VM_ROOT": str(tmp_path / "vms"),
            # No Service Bus answers these settings: a test that wants digests at backup time turns it on.
            "DIGEST_AFTER_BACKUP": "false",
        }
        base.update(env)
        return Settings.from_env(base)

    return factory


# --- test tiers -----------------------------------------------------------------------------------
TIERS = ("unit", "integration", "e2e")

# A test that uses any of these (directly or through another fixture) talks to a service or runs a
# process: Azurite, the local Service Bus, the contract servers, Settings pointing at Azurite.
SERVICE_FIXTURES = frozenset({
    "azurite", "storage_connection_string", "local_servicebus", "contract_server", "make_settings",
    "servicebus_connection",
})
# Folders and modules whose tests run the whole loop, or start servers or processes themselves
# rather than through a fixture. A new such module may instead carry ``pytestmark =
# pytest.mark.integration``; the unit-tier guard names any that is missing.
PATH_TIERS: dict[str, str] = {
    "e2e/": "e2e",
    "devhost/test_dev_run.py": "e2e",
    "servicebus/": "integration",
    "faults/": "integration",
    "extension/test_crypto.py": "integration",
    "extension/test_enable.py": "integration",
    "infra/test_package.py": "integration",
}
_TESTS_ROOT = Path(__file__).resolve().parent


def tier_of(item: pytest.Item) -> str:
    """The tier of one collected test: an explicit marker wins, then its path, then its fixtures."""
    for tier in TIERS:
        if item.get_closest_marker(tier) is not None:
            return tier
    relative = Path(str(item.path)).resolve().relative_to(_TESTS_ROOT).as_posix()
    for prefix, tier in PATH_TIERS.items():
        if relative == prefix or (prefix.endswith("/") and relative.startswith(prefix)):
            return tier
    if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
        return "integration"
    return "unit"


def pytest_configure(config: pytest.Config) -> None:
    # The unit tier alone (`./dev test unit`) draws fewer Hypothesis examples; a whole run draws each
    # property's own budget (tests/properties.py).
    if config.getoption("markexpr", "") == "unit":
        settings.load_profile(UNIT_PROFILE)
    # platform caches what it learns by running `uname -p` once; azure-core asks for it when a
    # client builds its user agent. Learn it here, so a unit test that builds a client stays unit.
    platform.platform()
    # A test process loads the app in-process many times, with the services swapped per test; the
    # dashboard's warm-up thread would compute reports on whichever services are current (and the CLI,
    # run in-process, fills unset settings from a `./dev run` stack another worker may be running, whose
    # sample settings turn it on). So it is off here; tests/dashboard/test_keep_warm.py loads the app with
    # it on in a process of its own.
    os.environ["DASHBOARD_KEEP_WARM"] = "false"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tier = tier_of(item)
        if item.get_closest_marker(tier) is None:
            item.add_marker(tier)
    long_files_first(items)


def long_files_first(items: list[pytest.Item]) -> None:
    """The files marked ``long`` first, each file's tests and the rest in the order collected.

    `./dev test` hands whole files to its test processes in this order (``--dist loadfile
    --no-loadscope-reorder``). xdist's own order, most tests first, left the files of two or three long
    tests (an outage, a stack, hundreds of processes) to the end, when one process ran the last of them
    for a minute while the others had finished: the long files now start early and the quick ones fill
    in at the end."""
    long_files = {item.path for item in items if item.get_closest_marker("long") is not None}
    items.sort(key=lambda item: item.path not in long_files)      # a stable sort keeps the rest in order


# docs/testing.md's rule: a file whose tests take this long in all is marked long.
LONG_FILE_SECONDS = 20.0


def unmarked_long_files(seconds: dict[str, float], marked: set[str], *,
                        bar: float = LONG_FILE_SECONDS) -> list[tuple[str, float]]:
    """The files not marked ``long`` whose tests took ``bar`` seconds or more in all, slowest first. A fixed
    figure, not one taken from the run: marking the files just over a bar drawn from the marked files would
    lower that bar, run after run. A busy machine names more files; judge by a quiet run."""
    found = [(path, taken) for path, taken in seconds.items() if path not in marked and taken >= bar]
    return sorted(found, key=lambda pair: -pair[1])


_FILE_SECONDS: dict[str, float] = {}
_LONG_FILES: set[str] = set()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # In the controlling process too: xdist hands it each test's reports, markers among their keywords.
    path = report.nodeid.split("::")[0]
    _FILE_SECONDS[path] = _FILE_SECONDS.get(path, 0.0) + report.duration
    if "long" in report.keywords:
        _LONG_FILES.add(path)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    unmarked = unmarked_long_files(_FILE_SECONDS, _LONG_FILES)
    if unmarked:
        terminalreporter.write_sep("-", f"test files of {LONG_FILE_SECONDS:.0f} s or more not marked long "
                                        "(docs/testing.md)")
        for path, taken in unmarked:
            terminalreporter.write_line(f"{path}: {taken:.0f} s of tests; mark it: pytestmark = pytest.mark.long")


class UnitTierViolation(AssertionError):
    """A unit test reached for the network or a process: mark it integration (docs/testing.md)."""


def _refuse(what: str):
    def refuse(*_args, **_kwargs):
        raise UnitTierViolation(f"a unit test may not {what}; use a fake, or mark the test "
                                "@pytest.mark.integration (docs/testing.md)")
    return refuse


# What a unit test may not reach: (object, attribute, what it would do). Each is shown refused by
# tests/test_tiers.py. Processes are stopped at every door Python has (subprocess and asyncio go through
# _posixsubprocess, multiprocessing through Process.start, pty through os.forkpty); the network at
# connect/bind, at sendto/sendmsg (UDP needs no connection) and at name resolution (a DNS query is a
# UDP send made inside libc, out of reach of the socket patches).
_NETWORK = "open a network connection"
_DNS = "look up a network address (DNS)"
_PROCESS = "start a process"
_REFUSED: tuple[tuple[object, str, str], ...] = (
    *((socket.socket, name, _NETWORK) for name in ("connect", "connect_ex", "bind", "sendto", "sendmsg")),
    *((socket, name, _DNS) for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr",
                                         "getnameinfo")),
    (subprocess.Popen, "__init__", _PROCESS),
    (_posixsubprocess, "fork_exec", _PROCESS),
    (multiprocessing.process.BaseProcess, "start", _PROCESS),
    *((os, name, _PROCESS) for name in ("system", "fork", "forkpty", "posix_spawn", "posix_spawnp", "execv",
                                         "execve", "spawnv", "spawnve") if hasattr(os, name)),
)


@pytest.fixture(autouse=True)
def _unit_tier_guard(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests run without services or processes: connecting, sending, resolving or spawning raises."""
    if request.node.get_closest_marker("unit") is None:
        return
    for owner, name, what in _REFUSED:
        monkeypatch.setattr(owner, name, _refuse(what))
