"""The package `func azure functionapp publish` uploads holds everything the app imports."""
from __future__ import annotations

import fnmatch
import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _ignored(path: str, patterns: list[str]) -> bool:
    """The .funcignore rules this project uses: ``dir/`` for a folder anywhere, else a name glob."""
    parts = path.split("/")
    for pattern in patterns:
        if pattern.endswith("/"):
            if any(fnmatch.fnmatch(part, pattern[:-1]) for part in parts[:-1]):
                return True
        elif any(fnmatch.fnmatch(part, pattern) for part in parts):
            return True
    return False


def _published_files() -> list[str]:
    patterns = [line.strip() for line in (ROOT / ".funcignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    return [path for path in tracked if not _ignored(path, patterns) and (ROOT / path).is_file()]


def test_the_published_package_indexes_every_function(tmp_path):
    """Only what .funcignore lets through, imported without the project on the path: the ten functions of the
    loop and the dashboard's."""
    files = _published_files()
    assert "function_app.py" in files and "host.json" in files and "requirements.txt" in files
    assert not [f for f in files if f.startswith(("tests/", "devhost/", ".venv/", "node_modules/"))]
    for path in files:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, tmp_path / path)
    # -S: no site hooks, so the editable install cannot put the checkout back on the path.
    probe = ("import sys, json; sys.path[:0] = [sys.argv[1], sys.argv[2]]; import function_app; "
             "print(json.dumps(sorted(f.get_function_name() for f in function_app.app.get_functions())))")
    done = subprocess.run([sys.executable, "-S", "-c", probe, str(tmp_path), sysconfig.get_paths()["purelib"]],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    from tests.functions.test_bindings import HTTP_ROUTES

    assert json.loads(done.stdout.strip().splitlines()[-1]) == sorted([
        "dispatch_snapshot", "enforce_retention", "evaluate_alerts", "ingest_status", "plan_shard", "record_digests",
        "retain_part", "run_restore", "run_restore_tests", "schedule_backups", "sweep_stale_jobs", "track_restore_points", *HTTP_ROUTES])
    # What the dashboard reads beside its code ships too: the OpenAPI document, templates, style, script.
    assert {"shared/web/openapi.yaml", "shared/web/templates/overview.html", "shared/web/static/dashboard.css",
            "shared/web/static/dashboard.js"} <= set(files)
