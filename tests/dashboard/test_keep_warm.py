"""DASHBOARD_KEEP_WARM as the app is loaded: the real app, imported in a process of its own as the worker
imports it, computes the fleet overview's report on a thread before any page is asked for; a bad value costs
the warming alone (one line says why) and every function is still indexed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# Loads the app and says whether it started the warming thread, how many of the overview's values were computed
# (waiting, up to two minutes, for all three only where the thread runs: without it nothing computes them) and how
# many functions the app has. No page is asked for.
SCRIPT = """
import json, threading, time
import function_app
from shared.bootstrap import services

warming = any(t.name == "dashboard-warm" for t in threading.enumerate())
deadline = time.monotonic() + 120
while warming and services().report_cache.computed < 3 and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps({"warming": warming, "computed": services().report_cache.computed,
                  "functions": len(function_app.app.get_functions())}))
"""


def _loaded(env: dict[str, str]) -> tuple[dict, str]:
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_the_app_computes_the_overview_as_it_loads_and_a_bad_value_costs_only_that(make_settings):
    settings = make_settings()
    env = {**os.environ, **settings.binding_values(), "TABLE_PREFIX": settings.table_prefix}
    warm, _ = _loaded({**env, "DASHBOARD_KEEP_WARM": "true"})
    assert warm["warming"] and warm["computed"] == 3, warm
    every = warm["functions"]
    bad, stderr = _loaded({**env, "DASHBOARD_KEEP_WARM": "sometimes"})
    assert bad == {"warming": False, "computed": 0, "functions": every}
    reasons = [line for line in stderr.splitlines() if "DASHBOARD_KEEP_WARM" in line]
    assert reasons == ["the dashboard's overview is not computed ahead: setting DASHBOARD_KEEP_WARM is "
                       "'sometimes'; use true or false"] and "Traceback" not in stderr
