"""One name per concept: a tier is a retention Rule from the named subset TIERS, a point's method is the
job's BackupMethod, and the JSON a user reads keeps the words it always printed."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from shared.documents import point_document
from shared.domain.inventory import BackupMethod
from shared.domain.recovery import POINT_METHOD, TIERS, RecoveryPoint, Rule
from shared.domain.retention import Hold
from shared.domain.words import Words
from shared.services.recovery import PointView

T0 = datetime(2026, 3, 1, 22, 30, tzinfo=timezone.utc)


@pytest.mark.parametrize("method, word", [(BackupMethod.EXTENSION_COMMAND, "BlobSnapshot"),
                                          (BackupMethod.RESTORE_POINT, "RestorePoint")])
def test_recoverypoint_json_prints_the_words_it_always_did(method, word):
    """``recoverypoint show -o json``: method BlobSnapshot or RestorePoint, tiers and deletedBy by name."""
    point = RecoveryPoint(name="1", vm_name="vm1", created_at=T0, job_id="job-1", method=method)
    doc = point_document(PointView(point.claimed(Rule.ON_DEMAND, T0), (Rule.DAILY, Rule.WEEKLY), None))
    assert (doc["method"], doc["tiers"], doc["deletedBy"]) == (word, ["Daily", "Weekly"], "OnDemand")


def test_a_word_no_record_ever_held_is_named_in_one_line():
    """Reading a method word nobody wrote fails with the word and the words it may be, not a KeyError."""
    with pytest.raises(ValueError, match="^'Snapshot' is not one of BlobSnapshot, RestorePoint$"):
        POINT_METHOD.member("Snapshot")


def test_a_tier_is_one_of_the_six_rules_that_hold_points():
    """The tiers are Azure Backup's six; a rule a run adds (LatestPoint, ...) never holds a point as a tier."""
    assert sorted(t.value for t in TIERS) == ["Daily", "InstantRestore", "Monthly", "OnDemand", "Weekly", "Yearly"]
    with pytest.raises(ValueError, match="LatestPoint is a retention rule, not a tier"):
        Hold(Rule.LATEST, T0)


def test_a_member_without_a_word_of_its_own_is_refused_at_once():
    """A word table that leaves a member out, or gives two members one word, fails where it is built."""
    with pytest.raises(ValueError, match="every BackupMethod member needs a word of its own"):
        Words({BackupMethod.RESTORE_POINT: "RestorePoint"})
    with pytest.raises(ValueError, match="every BackupMethod member needs a word of its own"):
        Words({BackupMethod.RESTORE_POINT: "Snapshot", BackupMethod.EXTENSION_COMMAND: "Snapshot"})
