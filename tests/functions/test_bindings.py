"""Binding contract: the functions Azure will index, their triggers, and the settings they need."""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bindings():
    import function_app
    from devhost.host import read_functions   # get_functions() may run once per app object

    return {spec.name: spec.bindings for spec in read_functions(function_app.app)}


def test_the_app_has_exactly_the_functions_of_the_loop(bindings):
    """Azure indexes the scheduler and its shard planner, the worker, the status blob trigger, the
    stale-job sweep, the restore-point follow-up, retention and its part workers, the restore worker, the
    digest recorder, the restore drills' timer, the alert evaluator and the dashboard's HTTP functions."""
    assert {name: [b["type"] for b in bs] for name, bs in bindings.items()} == {
        "schedule_backups": ["timerTrigger"],
        "plan_shard": ["serviceBusTrigger"],
        "dispatch_snapshot": ["serviceBusTrigger"],
        "ingest_status": ["blobTrigger"],
        "sweep_stale_jobs": ["timerTrigger"],
        "track_restore_points": ["timerTrigger"],
        "enforce_retention": ["timerTrigger"],
        "retain_part": ["serviceBusTrigger"],
        "run_restore": ["serviceBusTrigger"],
        "record_digests": ["serviceBusTrigger"],
        "run_restore_tests": ["timerTrigger"],
        "evaluate_alerts": ["timerTrigger"],
        **{name: ["httpTrigger", "http"] for name in HTTP_ROUTES},
    }


# The dashboard (functions/dashboard.py): its JSON API under /api/v1/ and its pages under /api/dashboard.
HTTP_ROUTES = {
    "api_compliance": "v1/compliance", "api_items": "v1/items", "api_item": "v1/items/{name}",
    "api_item_points": "v1/items/{name}/recoverypoints", "api_jobs": "v1/jobs", "api_job": "v1/jobs/{id}",
    "api_alerts": "v1/alerts", "api_alert": "v1/alerts/{name}", "api_restore_tests": "v1/restore-tests",
    "api_restore_test_plans": "v1/restore-tests/plans", "api_openapi": "v1/openapi.json",
    "dashboard_overview": "dashboard", "dashboard_items": "dashboard/items", "dashboard_item": "dashboard/items/{name}",
    "dashboard_jobs": "dashboard/jobs", "dashboard_job": "dashboard/jobs/{id}",
    "dashboard_restore_tests": "dashboard/restore-tests",
}


def test_the_dashboard_is_read_only_and_needs_a_function_key(bindings):
    """Every HTTP function takes GET only, on its route, and asks Azure for a function key (authLevel FUNCTION)."""
    for name, route in HTTP_ROUTES.items():
        trigger, output = bindings[name]
        assert (trigger["route"], trigger["methods"], trigger["authLevel"]) == (route, ["GET"], "FUNCTION"), name
        assert output == {"direction": "OUT", "type": "http", "name": "$return"}


def test_triggers_take_names_and_schedules_from_app_settings(bindings):
    """Queue, container and schedule are app settings, so operators change them without a deploy."""
    timer, = bindings["schedule_backups"]
    worker, = bindings["dispatch_snapshot"]
    blob, = bindings["ingest_status"]
    assert timer["schedule"] == "%SNAPSHOT_SCHEDULE%" and timer["useMonitor"] is True
    assert worker["queueName"] == "%SNAPSHOT_TASKS_QUEUE%" and worker["connection"] == "ServiceBusConnection"
    planner, = bindings["plan_shard"]
    assert planner["queueName"] == "%PLANNER_QUEUE%" and planner["connection"] == "ServiceBusConnection"
    assert blob["path"] == "%STATUS_CONTAINER%/{name}.Status.txt" and blob["connection"] == "BackupStorage"
    restore_points, = bindings["track_restore_points"]
    assert restore_points["schedule"] == "%RESTORE_POINT_SCHEDULE%" and restore_points["useMonitor"] is True
    restorer, = bindings["run_restore"]
    assert restorer["queueName"] == "%RESTORE_TASKS_QUEUE%" and restorer["connection"] == "ServiceBusConnection"
    drills, = bindings["run_restore_tests"]
    assert drills["schedule"] == "%RESTORE_TEST_SCHEDULE%" and drills["useMonitor"] is True
    retention, = bindings["enforce_retention"]
    assert retention["schedule"] == "%RETENTION_SCHEDULE%" and retention["useMonitor"] is True
    alerts, = bindings["evaluate_alerts"]
    assert alerts["schedule"] == "%ALERT_SCHEDULE%" and alerts["useMonitor"] is True
    parts, = bindings["retain_part"]
    assert parts["queueName"] == "%RETENTION_QUEUE%" and parts["connection"] == "ServiceBusConnection"
    digests, = bindings["record_digests"]
    assert digests["queueName"] == "%DIGEST_TASKS_QUEUE%" and digests["connection"] == "ServiceBusConnection"


def test_every_setting_a_binding_references_is_in_the_sample_settings(bindings):
    """A developer who copies local.settings.sample.json has every setting the triggers resolve."""
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    referenced = set()
    for bs in bindings.values():
        for b in bs:
            referenced.update(re.findall(r"%([^%]+)%", json.dumps(b)))
            if "connection" in b:
                referenced.add(b["connection"])
    missing = sorted(referenced - set(sample))
    assert not missing, f"settings used by bindings but absent from the sample: {missing}"


def test_every_setting_the_code_reads_is_documented_in_the_sample_and_readme():
    """Each environment variable Settings reads appears in the sample settings and the README."""
    source = (ROOT / "shared" / "settings.py").read_text()
    read = set(re.findall(r'"([A-Z][A-Z_]+)"', source))
    sample = set(json.loads((ROOT / "local.settings.sample.json").read_text())["Values"])
    readme = (ROOT / "README.md").read_text()
    assert read, "no settings found: the pattern no longer matches settings.py"
    assert read <= sample, f"missing from the sample: {sorted(read - sample)}"
    assert all(name in readme for name in read | {"BackupStorage", "ServiceBusConnection"})


def test_function_app_module_only_registers_blueprints():
    """function_app.py stays a composition file: no trigger logic creeps into it."""
    text = (ROOT / "function_app.py").read_text()
    assert "def " not in text and text.count("register_functions") == 11


def test_the_alert_evaluator_runs_at_least_every_30_seconds_by_default():
    """An alert reaches its webhook within 60 s of the job's end because the evaluator's timer fires at least
    every 30 s, by default and in the sample settings (the alert loop's tests run it every 5 s)."""
    from datetime import datetime, timezone

    from croniter import croniter

    from shared.settings import Settings

    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]["ALERT_SCHEDULE"]
    for schedule in (Settings.alert_schedule, sample):
        fires = croniter(schedule, datetime(2026, 1, 1, tzinfo=timezone.utc), second_at_beginning=True)
        times = [fires.get_next(datetime) for _ in range(200)]
        assert max((b - a).total_seconds() for a, b in zip(times, times[1:])) <= 30, schedule
