"""The extension root the dispatcher writes, read back the way WALA and the handler read it."""
from __future__ import annotations

import json
import os
import stat

import pytest

from extension.layout import HandlerEnvironment, LayoutError, resolve_seq, write_extension_root


def test_the_root_is_laid_out_like_walas(tmp_path):
    """HandlerEnvironment.json names the handler and its folders; config/<seq>.settings holds the command."""
    path = write_extension_root(tmp_path, 7, {"taskId": "t"}, {"objectStr": "x"})

    (env_doc,) = json.loads((tmp_path / "HandlerEnvironment.json").read_text())
    assert env_doc["name"] == "Microsoft.Azure.RecoveryServices.VMSnapshotLinux"
    assert env_doc["version"] == "1.0"
    assert set(env_doc["handlerEnvironment"]) == {"logFolder", "configFolder", "statusFolder", "heartbeatFile"}
    assert path == tmp_path / "config" / "7.settings"
    handler_settings = json.loads(path.read_text())["runtimeSettings"][0]["handlerSettings"]
    assert handler_settings == {
        "protectedSettingsCertThumbprint": None,
        "protectedSettings": {"objectStr": "x"},
        "publicSettings": {"taskId": "t"},
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_handler_environment_is_written_once(tmp_path):
    """A second command reuses the existing HandlerEnvironment.json untouched."""
    write_extension_root(tmp_path, 0, {}, {})
    env_file = tmp_path / "HandlerEnvironment.json"
    env_file.write_text(env_file.read_text().replace('"1.0"', '"1.0"    '))
    before = env_file.read_text()

    write_extension_root(tmp_path, 1, {}, {})

    assert env_file.read_text() == before
    assert HandlerEnvironment.load(tmp_path).settings_file(1).exists()


def test_encrypted_settings_need_a_thumbprint_and_clear_ones_must_not_have_one(tmp_path):
    """Mixing the two forms is refused before anything reaches the VM."""
    with pytest.raises(TypeError):
        write_extension_root(tmp_path, 0, {}, {"objectStr": "x"}, thumbprint="AB12")
    with pytest.raises(TypeError):
        write_extension_root(tmp_path, 0, {}, "base64cms")


def test_the_sequence_number_comes_from_the_environment_else_the_newest_settings(tmp_path):
    """ConfigSequenceNumber wins; without it the .settings file with the newest mtime is used."""
    write_extension_root(tmp_path, 5, {}, {})
    write_extension_root(tmp_path, 2, {}, {})
    os.utime(tmp_path / "config" / "5.settings", (1, 1))
    env = HandlerEnvironment.load(tmp_path)

    assert resolve_seq(env, {"ConfigSequenceNumber": "9"}) == 9
    assert resolve_seq(env, {}) == 2
    with pytest.raises(LayoutError):
        resolve_seq(env, {"ConfigSequenceNumber": "x"})
