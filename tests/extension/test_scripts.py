"""Pre/post scripts from VMSnapshotScriptPluginConfig.json: app consistency and its failure modes."""
from __future__ import annotations

from tests.extension.conftest import health, message_of, requires_root

pytestmark = requires_root


def test_successful_scripts_make_the_backup_app_consistent(vm):
    """Pre-script, snapshot, post-script all fine: code "0" with the scripts' parameters passed."""
    vm.scripts()

    element = vm.run()

    assert (element["status"]["status"], element["status"]["code"]) == ("success", "0")
    assert message_of(element)["messageStr"].startswith("Enable Succeeded with App Consistent Snapshot")
    assert health(element) == (0, 0)
    assert vm.script_runs() == ["pre p1 p2", "post q1"]
    assert len(vm.snapshots("os.vhd")) == 1


def test_a_failing_pre_script_with_continue_still_snapshots(vm):
    """continueBackupOnFailure true: FS-consistent code "1", health 300 (yellow), snapshot taken."""
    vm.scripts(pre="exit 3", continueBackupOnFailure=True)

    element = vm.run()

    assert (element["status"]["status"], element["status"]["code"]) == ("success", "1")
    assert health(element) == (128, 300)
    assert len(vm.snapshots("os.vhd")) == 1 and len(vm.snapshots("data0.vhd")) == 1
    assert vm.script_runs() == ["pre p1 p2", "post q1"]


def test_a_failing_pre_script_without_continue_aborts_the_backup(vm):
    """continueBackupOnFailure false: error 300 naming the plugin and the code, no snapshot."""
    vm.scripts(pre="exit 3", continueBackupOnFailure=False)

    element = vm.run()

    assert (element["status"]["status"], element["status"]["code"]) == ("error", "300")
    assert message_of(element)["messageStr"] == (
        "PreScript failed for the plugin ScriptRunner StatusCode.FailedPrepostPreScriptFailed,"
    )
    assert health(element) == (128, 300)
    assert vm.snapshots("os.vhd") == []


def test_a_pre_script_that_overruns_its_timeout_is_308(vm):
    """A pre-script still running after timeoutInSeconds is killed: error 308, no snapshot."""
    vm.scripts(pre="sleep 30", timeoutInSeconds=1, continueBackupOnFailure=False)

    element = vm.run()

    assert (element["status"]["status"], element["status"]["code"]) == ("error", "308")
    assert "StatusCode.FailedPrepostPreScriptTimeout," in message_of(element)["messageStr"]
    assert vm.snapshots("os.vhd") == []


def test_a_failing_post_script_without_continue_fails_after_the_snapshot(vm):
    """The snapshot is taken, but a post-script failure with continue false reports error 301."""
    vm.scripts(post="exit 1", continueBackupOnFailure=False)

    element = vm.run()

    assert (element["status"]["status"], element["status"]["code"]) == ("error", "301")
    assert len(vm.snapshots("os.vhd")) == 1


def test_without_fs_freeze_a_pre_script_failure_always_aborts(vm):
    """fsFreezeEnabled false: no freeze at all, and a failed pre-script aborts despite continue."""
    vm.scripts(pre="exit 1", fsFreezeEnabled=False, continueBackupOnFailure=True)

    class NeverFreeze:
        def freeze(self, mounts, timeout):
            raise AssertionError("froze although fsFreezeEnabled is false")

        def thaw(self):
            return True

    element = vm.run(freezer=NeverFreeze())

    assert element["status"]["code"] == "300"
    assert vm.snapshots("os.vhd") == []


def test_without_fs_freeze_scripts_and_snapshot_are_app_consistent(vm):
    """fsFreezeEnabled false with good scripts: snapshot without freezing, code "0"."""
    vm.scripts(fsFreezeEnabled=False)
    frozen = []

    class Recording:
        def freeze(self, mounts, timeout):
            frozen.append(mounts)

        def thaw(self):
            return True

    element = vm.run(freezer=Recording())

    assert element["status"]["code"] == "0"
    assert frozen == []


def test_a_plugin_config_readable_by_others_is_ignored_with_a_warning(vm):
    """Config not mode 600/400: scripts skipped, FS-consistent code "1", health 317."""
    vm.scripts(config_mode=0o644)

    element = vm.run()

    assert (element["status"]["status"], element["status"]["code"]) == ("success", "1")
    assert health(element) == (128, 317)
    assert vm.script_runs() == []


def test_a_broken_plugin_config_means_not_configured(vm):
    """Unparseable JSON (305) is treated as "no app consistency": plain code "1", health 1."""
    path = vm.scripts()
    path.write_text("{not json")

    element = vm.run()

    assert (element["status"]["code"], health(element)) == ("1", (0, 1))
    assert vm.script_runs() == []


def test_a_missing_pre_script_without_continue_fails_the_precheck(vm):
    """preScriptLocation pointing nowhere and continue false: error 302 from the plugin host precheck."""
    vm.scripts(preScriptLocation=str(vm.etc / "nope.sh"), continueBackupOnFailure=False)

    element = vm.run()

    assert (element["status"]["status"], element["status"]["code"]) == ("error", "302")
    assert message_of(element)["messageStr"] == (
        "Plugin Host Precheck Failed StatusCode.FailedPrepostPreScriptNotFound,"
    )
    assert vm.snapshots("os.vhd") == []


def test_a_group_accessible_script_with_continue_is_skipped(vm):
    """A pre-script with group/other permissions (306) and continue true: code "1", health 306."""
    vm.scripts(script_mode=0o755, continueBackupOnFailure=True)

    element = vm.run()

    assert (element["status"]["code"], health(element)) == ("1", (128, 306))
    assert vm.script_runs() == []
    assert len(vm.snapshots("os.vhd")) == 1
