"""Policies: what users may create, what is refused (naming the field), and the built-in DefaultPolicy."""
from __future__ import annotations

from datetime import time

import pytest
from hypothesis import given, strategies as st

from shared.domain.policy import (EnhancedSchedule, Frequency, Policy, Retention, StandardSchedule, Weekday,
                                  default_policy)
from shared.errors import ValidationError


def test_default_policy_matches_azure():
    """DefaultPolicy backs up daily at 22:30 UTC, keeps 2 days of snapshots and 30 daily points."""
    policy = default_policy()
    assert policy.name == "DefaultPolicy"
    assert policy.schedule == StandardSchedule(Frequency.DAILY, time(22, 30))
    assert (policy.time_zone, policy.instant_rp_days, policy.retention.daily_days) == ("UTC", 2, 30)


@pytest.mark.parametrize("build, field", [
    (lambda: Policy("p", time_zone="Mars/Olympus"), "time_zone"),
    (lambda: Policy("p", schedule=StandardSchedule(time=time(22, 15))), "schedule.time"),
    (lambda: Policy("p", schedule=StandardSchedule(Frequency.WEEKLY)), "schedule.days"),
    (lambda: Policy("p", schedule=StandardSchedule(Frequency.HOURLY)), "schedule.frequency"),
    (lambda: Policy("p", schedule=EnhancedSchedule(interval_hours=5), instant_rp_days=7), "schedule.interval_hours"),
    (lambda: Policy("p", schedule=EnhancedSchedule(interval_hours=8, window_hours=4), instant_rp_days=7),
     "schedule.window_hours"),
    (lambda: Policy("p", instant_rp_days=6), "instant_rp_days"),
    (lambda: Policy("p", schedule=EnhancedSchedule(), instant_rp_days=31), "instant_rp_days"),
    (lambda: Policy("p", retention=Retention(daily_days=6)), "retention.daily_days"),
    (lambda: Policy("p", retention=Retention(daily_days=None)), "retention.daily_days"),
    (lambda: Policy("p", retention=Retention(yearly_years=100)), "retention.yearly_years"),
    (lambda: Policy("p", retention=Retention(monthly_months=1189)), "retention.monthly_months"),
    (lambda: Policy("p", schedule=StandardSchedule(Frequency.WEEKLY, days=(Weekday.SUNDAY,)), instant_rp_days=5),
     "retention.daily_days"),
    (lambda: Policy("p", schedule=StandardSchedule(Frequency.WEEKLY, days=(Weekday.MONDAY,)), instant_rp_days=5,
                    retention=Retention(daily_days=None, weekly_weeks=4, weekly_days=(Weekday.SUNDAY,))),
     "retention.weekly_days"),
    (lambda: Policy("bad name!"), "name"),
])
def test_invalid_policies_are_refused_naming_the_field(build, field):
    """An invalid policy is refused and the error says which field to fix."""
    with pytest.raises(ValidationError) as caught:
        build()
    assert caught.value.field == field


def test_weekly_and_enhanced_policies_are_accepted():
    """A weekly Sunday policy and an every-4-hours Enhanced policy in Berlin are valid."""
    weekly = Policy("weekly", schedule=StandardSchedule(Frequency.WEEKLY, time(3, 0), (Weekday.SUNDAY,)),
                    instant_rp_days=5, retention=Retention(daily_days=None, weekly_weeks=12))
    enhanced = Policy("hourly", schedule=EnhancedSchedule(4, time(20, 0), 12), time_zone="Europe/Berlin",
                      instant_rp_days=7, retention=Retention(daily_days=30, monthly_months=12))
    assert weekly.policy_type.value == "V1" and enhanced.policy_type.value == "V2"


def test_document_names_the_json_field_path_when_wrong():
    """A hand-written policy document with a bad interval is refused naming the interval."""
    doc = default_policy().to_document()
    doc["schedulePolicy"] = {"scheduleRunFrequency": "Hourly", "hourlySchedule": {"interval": "often"}}
    with pytest.raises(ValidationError) as caught:
        Policy.from_document(doc)
    assert caught.value.field == "schedule.interval_hours"


policies = st.one_of(
    st.builds(lambda t, tz, days: Policy("p", StandardSchedule(Frequency.DAILY, t), tz, 2, Retention(daily_days=days)),
              st.sampled_from([time(h, m) for h in range(24) for m in (0, 30)]),
              st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]),
              st.integers(7, 9999)),
    st.builds(lambda i, start, hours, keep: Policy("p", EnhancedSchedule(i, start, max(i, hours)), "Asia/Kolkata",
                                                   7, Retention(daily_days=30, yearly_years=keep)),
              st.sampled_from([4, 6, 8, 12]), st.sampled_from([time(h, 30) for h in range(24)]),
              st.integers(4, 24), st.integers(1, 99)),
)


@given(policies)
def test_policy_survives_storage_round_trip(policy):
    """A stored policy reads back exactly as it was written."""
    assert Policy.from_document(policy.to_document()) == policy
