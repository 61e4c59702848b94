"""One typed, validated Settings object, read from the environment lazily (never at import).

Names follow the Functions conventions: connections are setting *prefixes*. ``BackupStorage`` is a
connection string (Azurite, development) or ``BackupStorage__blobServiceUri`` +
``BackupStorage__tableServiceUri`` with a managed identity (``BackupStorage__credential`` =
``managedidentity``, optional ``BackupStorage__clientId``). ``ServiceBusConnection`` likewise, or
``ServiceBusConnection__fullyQualifiedNamespace``. ``ComputeConnection`` names a Compute endpoint
other than Azure Resource Manager, as an emulator's connection string (the local one; absent: ARM
with the app's identity). Every setting is listed in ``local.settings.sample.json`` and the README.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Mapping

from croniter import croniter

from shared.errors import ConfigurationError

STORAGE = "BackupStorage"
SERVICE_BUS = "ServiceBusConnection"
COMPUTE = "ComputeConnection"
STORAGE_ENDPOINTS = ("blobServiceUri", "tableServiceUri")
SERVICE_BUS_ENDPOINTS = ("fullyQualifiedNamespace",)


@dataclass(frozen=True)
class Connection:
    """A named connection: either a connection string or an endpoint reached with an identity."""

    name: str
    connection_string: str | None = None
    endpoints: Mapping[str, str] | None = None   # e.g. blobServiceUri, tableServiceUri, fullyQualifiedNamespace
    client_id: str | None = None                  # user-assigned managed identity

    @property
    def uses_identity(self) -> bool:
        return self.connection_string is None

    def endpoint(self, key: str) -> str:
        value = (self.endpoints or {}).get(key)
        if not value:
            raise ConfigurationError(f"setting {self.name}__{key} is missing; set it or set {self.name} "
                                     f"to a connection string")
        return value


@dataclass(frozen=True)
class Settings:
    storage: Connection
    # None when not set: only what sends or receives messages needs it (service_bus_connection), so
    # the CLI's readers (job, recovery point and retention listings) run without it.
    service_bus: Connection | None
    tasks_queue: str = "snapshot-tasks"
    planner_queue: str = "plan-shards"
    retention_queue: str = "retention-parts"
    restore_queue: str = "restore-tasks"
    digest_queue: str = "digest-tasks"
    # Whether each new point of blob snapshots gets its digest recorded right after its backup (one read of
    # the backup then, so every restore of it reads the copy only); off: the first restore reads both.
    digest_after_backup: bool = True
    restore_test_schedule: str = "0 */15 * * * *"
    fan_out_items: int = 5000               # a tick fans out to planners once the fleet has this many items
    schedule: str = "0 */5 * * * *"
    sweep_schedule: str = "0 */10 * * * *"
    restore_point_schedule: str = "0 */1 * * * *"
    status_container: str = "vmsnap-status"
    table_prefix: str = "vmsnap"
    dispatcher: str = "local"
    local_vm_root: Path = Path(".local/vms")
    subscription_id: str | None = None
    catch_up: timedelta = timedelta(hours=24)
    retention_schedule: str = "0 0 3 * * *"
    status_blob_retention: timedelta = timedelta(days=7)
    snapshot_limit: int = 450
    compute: Connection | None = None       # a Compute endpoint other than ARM (the local one); None: ARM
    alert_schedule: str = "*/30 * * * * *"
    alert_webhook_url: str | None = None    # where alerts are sent (common alert schema); None: nowhere

    def service_bus_connection(self) -> Connection:
        """The Service Bus connection; ConfigurationError naming the setting when it is not set."""
        if self.service_bus is None:
            raise ConfigurationError(_missing(SERVICE_BUS, SERVICE_BUS_ENDPOINTS))
        return self.service_bus

    def table(self, name: str) -> str:
        """The physical table name of a logical table (``jobs``, ``policies``, ``items``, ...)."""
        return f"{self.table_prefix}{name}"

    def binding_values(self) -> dict[str, str]:
        """The app settings the functions' bindings name (``%SETTING%`` and connections), for a host
        running the app with these settings (the local host, tests)."""
        values = {"SNAPSHOT_TASKS_QUEUE": self.tasks_queue, "PLANNER_QUEUE": self.planner_queue,
                  "RETENTION_QUEUE": self.retention_queue,
                  "RESTORE_TASKS_QUEUE": self.restore_queue, "DIGEST_TASKS_QUEUE": self.digest_queue,
                  "RESTORE_TEST_SCHEDULE": self.restore_test_schedule,
                  "SNAPSHOT_SCHEDULE": self.schedule,
                  "SWEEP_SCHEDULE": self.sweep_schedule, "RESTORE_POINT_SCHEDULE": self.restore_point_schedule,
                  "RETENTION_SCHEDULE": self.retention_schedule, "ALERT_SCHEDULE": self.alert_schedule,
                  "STATUS_CONTAINER": self.status_container}
        for conn in (self.storage, self.service_bus):
            if conn is None:
                continue
            if conn.connection_string:
                values[conn.name] = conn.connection_string
            else:
                values.update({f"{conn.name}__{key}": value for key, value in (conn.endpoints or {}).items()})
        return values

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        dispatcher = env.get("DISPATCHER", "local").strip().lower()
        if dispatcher not in ("local", "arm"):
            raise ConfigurationError(f"setting DISPATCHER is {dispatcher!r}; use 'local' or 'arm'")
        schedule = _ncrontab(env, "SNAPSHOT_SCHEDULE", cls.schedule)
        sweep_schedule = _ncrontab(env, "SWEEP_SCHEDULE", cls.sweep_schedule)
        restore_point_schedule = _ncrontab(env, "RESTORE_POINT_SCHEDULE", cls.restore_point_schedule)
        restore_test_schedule = _ncrontab(env, "RESTORE_TEST_SCHEDULE", cls.restore_test_schedule)
        prefix = env.get("TABLE_PREFIX", cls.table_prefix)
        if not prefix.isalnum() or not prefix[:1].isalpha() or len(prefix) > 40:
            raise ConfigurationError(f"setting TABLE_PREFIX is {prefix!r}; use letters and digits, "
                                     f"starting with a letter")
        subscription = env.get("AZURE_SUBSCRIPTION_ID") or None
        if dispatcher == "arm" and not subscription:
            raise ConfigurationError("setting AZURE_SUBSCRIPTION_ID is missing; DISPATCHER=arm needs it")
        try:
            catch_up = timedelta(hours=float(env.get("SCHEDULE_CATCH_UP_HOURS", "24")))
        except ValueError as exc:
            raise ConfigurationError("setting SCHEDULE_CATCH_UP_HOURS must be a number of hours") from exc
        retention_schedule = _ncrontab(env, "RETENTION_SCHEDULE", cls.retention_schedule)
        status_days = _number(env, "STATUS_BLOB_RETENTION_DAYS", "7", "a number of days", low=0.0)
        snapshot_limit = int(_number(env, "SNAPSHOT_LIMIT", str(cls.snapshot_limit), "a whole number of snapshots",
                                     low=1.0, whole=True))
        alert_schedule = _ncrontab(env, "ALERT_SCHEDULE", cls.alert_schedule)
        webhook = env.get("ALERT_WEBHOOK_URL", "").strip() or None
        if webhook is not None and not webhook.lower().startswith(("https://", "http://")):
            raise ConfigurationError("setting ALERT_WEBHOOK_URL must be an http(s) URL (an action group's, a Logic "
                                     "App's, a Teams or PagerDuty webhook), or empty for no delivery")
        fan_out_items = int(_number(env, "PLANNER_FAN_OUT_ITEMS", str(cls.fan_out_items),
                                    "a whole number of items (0: never fan out)", low=0.0, whole=True))
        storage = _connection(env, STORAGE, STORAGE_ENDPOINTS)
        if storage is None:
            raise ConfigurationError(_missing(STORAGE, STORAGE_ENDPOINTS))
        return cls(
            storage=storage,
            service_bus=_connection(env, SERVICE_BUS, SERVICE_BUS_ENDPOINTS),
            tasks_queue=env.get("SNAPSHOT_TASKS_QUEUE", cls.tasks_queue),
            planner_queue=env.get("PLANNER_QUEUE", cls.planner_queue),
            retention_queue=env.get("RETENTION_QUEUE", cls.retention_queue),
            restore_queue=env.get("RESTORE_TASKS_QUEUE", cls.restore_queue),
            digest_queue=env.get("DIGEST_TASKS_QUEUE", cls.digest_queue),
            digest_after_backup=_flag(env, "DIGEST_AFTER_BACKUP", default=cls.digest_after_backup),
            restore_test_schedule=restore_test_schedule,
            fan_out_items=fan_out_items,
            schedule=schedule,
            sweep_schedule=sweep_schedule,
            restore_point_schedule=restore_point_schedule,
            status_container=env.get("STATUS_CONTAINER", cls.status_container),
            table_prefix=prefix,
            dispatcher=dispatcher,
            local_vm_root=Path(env.get("LOCAL_VM_ROOT", str(cls.local_vm_root))),
            subscription_id=subscription,
            catch_up=catch_up,
            retention_schedule=retention_schedule,
            status_blob_retention=timedelta(days=status_days),
            snapshot_limit=snapshot_limit,
            compute=_compute_connection(env),
            alert_schedule=alert_schedule,
            alert_webhook_url=webhook,
        )


@dataclass(frozen=True)
class ComputeEmulator:
    """A ``ComputeConnection``: ``Endpoint=https://host:port;CertificateFile=<PEM the endpoint's
    certificate is in>;Token=<the bearer token it accepts>`` (what ``./dev run`` writes)."""

    endpoint: str
    certificate_file: Path
    token: str


def compute_emulator(conn: Connection) -> ComputeEmulator:
    """The parts of a ``ComputeConnection``, or ConfigurationError saying what is wrong with it."""
    parts = {}
    for piece in (conn.connection_string or "").split(";"):
        key, sep, value = piece.partition("=")
        if sep:
            parts[key.strip().lower()] = value.strip()
    endpoint, certificate, token = parts.get("endpoint", ""), parts.get("certificatefile", ""), parts.get("token", "")
    if not endpoint.startswith("https://") or not certificate or not token:
        raise ConfigurationError(f"setting {conn.name} is not a Compute endpoint connection string; expected "
                                 f"Endpoint=https://<host>:<port>;CertificateFile=<PEM file>;Token=<token>, or "
                                 f"leave it unset to use Azure Resource Manager")
    return ComputeEmulator(endpoint.rstrip("/"), Path(certificate), token)


def _compute_connection(env: Mapping[str, str]) -> Connection | None:
    if not env.get(COMPUTE):
        return None
    conn = Connection(name=COMPUTE, connection_string=env[COMPUTE])
    compute_emulator(conn)          # refused at start-up, not at the first backup
    return conn


STATUS_BLOB_SOURCE = "STATUS_BLOB_SOURCE"
BLOB_SOURCES = ("LogsAndContainerScan", "EventGrid")      # the blob trigger's sources; the first is the default


def status_blob_source(env: Mapping[str, str]) -> str:
    """The status blob trigger's source, spelled as the host spells it; ConfigurationError otherwise.

    Not a field of Settings: the source is part of the trigger's binding, read as the app is indexed,
    and a bad value must cost that one trigger, not every function that reads Settings."""
    value = env.get(STATUS_BLOB_SOURCE, "").strip()
    for source in BLOB_SOURCES:
        if value.lower() == source.lower():
            return source
    if not value:
        return BLOB_SOURCES[0]
    raise ConfigurationError(f"setting {STATUS_BLOB_SOURCE} is {value!r}; use {' or '.join(reversed(BLOB_SOURCES))}")


KEEP_WARM = "DASHBOARD_KEEP_WARM"


def dashboard_keep_warm(env: Mapping[str, str]) -> bool:
    """Whether the app computes the dashboard's overview ahead of its pages (``true``/``false``, default
    false); ConfigurationError names a value that is neither. Read as the app is indexed, like the blob
    source: a bad value must cost the warming alone, not every function."""
    return _flag(env, KEEP_WARM, default=False)


def _flag(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    """A ``true``/``false`` setting (also 1/0); unset or empty: ``default``."""
    value = env.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("false", "0"):
        return False
    if value in ("true", "1"):
        return True
    raise ConfigurationError(f"setting {name} is {env[name]!r}; use true or false")


def _ncrontab(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, default)
    if len(value.split()) != 6 or not croniter.is_valid(value, second_at_beginning=True):
        raise ConfigurationError(
            f"setting {name} is {value!r}; use an NCRONTAB expression with six fields, seconds first, "
            f"e.g. '0 */5 * * * *'")
    return value


def _number(env: Mapping[str, str], name: str, default: str, what: str, *, low: float,
            whole: bool = False) -> float:
    text = env.get(name, default)
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= low or (whole and not value.is_integer()):
        raise ConfigurationError(f"setting {name} is {text!r}; use {what} (at least {low:g})")
    return value


def _connection(env: Mapping[str, str], name: str, endpoint_keys: tuple[str, ...]) -> Connection | None:
    """The named connection, or None when none of its settings is set."""
    if env.get(name):
        return Connection(name=name, connection_string=env[name])
    endpoints = {k: env[f"{name}__{k}"] for k in endpoint_keys if env.get(f"{name}__{k}")}
    if not endpoints:
        return None
    return Connection(name=name, endpoints=endpoints, client_id=env.get(f"{name}__clientId") or None)


def _missing(name: str, endpoint_keys: tuple[str, ...]) -> str:
    keys = " and ".join(f"{name}__{k}" for k in endpoint_keys)
    return (f"setting {name} is missing; set it to a connection string, or set {keys} for a managed identity "
            f"(see local.settings.sample.json)")


_cached: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings, read on first use."""
    global _cached
    if _cached is None:
        _cached = Settings.from_env()
    return _cached


def reset_settings() -> None:
    """Forget the cached settings (tests, and the local host after it changes the environment)."""
    global _cached
    _cached = None
