"""A policy exported with `az backup policy show` becomes the same vmsnap policy an operator would type;
Windows time-zone names become IANA names."""
from __future__ import annotations

import json

import pytest

from shared.domain.az_policy import check_depth, from_az_policy, iana_time_zone
from shared.domain.policy import EnhancedSchedule, Frequency, Policy, Weekday
from shared.errors import ValidationError

V1_WEEKLY = {
    "id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults/v/backupPolicies/Weekly",
    "name": "Weekly", "type": "Microsoft.RecoveryServices/vaults/backupPolicies", "eTag": None, "location": None,
    "properties": {
        "backupManagementType": "AzureIaasVM", "policyType": "V1", "protectedItemsCount": 3,
        "instantRpRetentionRangeInDays": 5, "instantRpDetails": {"azureBackupRgNamePrefix": None},
        "timeZone": "Pacific Standard Time",
        "schedulePolicy": {"schedulePolicyType": "SimpleSchedulePolicy", "scheduleRunFrequency": "Weekly",
                           "scheduleRunDays": ["Sunday", "Wednesday"],
                           "scheduleRunTimes": ["2023-06-01T23:00:00+00:00"], "scheduleWeeklyFrequency": 0},
        "retentionPolicy": {
            "retentionPolicyType": "LongTermRetentionPolicy", "dailySchedule": None,
            "weeklySchedule": {"daysOfTheWeek": ["Sunday"], "retentionTimes": ["2023-06-01T23:00:00+00:00"],
                               "retentionDuration": {"count": 12, "durationType": "Weeks"}},
            "monthlySchedule": {"retentionScheduleFormatType": "Weekly",
                                "retentionScheduleWeekly": {"daysOfTheWeek": ["Sunday"], "weeksOfTheMonth": ["First"]},
                                "retentionTimes": ["2023-06-01T23:00:00+00:00"],
                                "retentionDuration": {"count": 60, "durationType": "Months"}},
            "yearlySchedule": None}}}

V2_HOURLY = {
    "name": "EnhancedPolicy", "properties": {
        "backupManagementType": "AzureIaasVM", "policyType": "V2", "instantRpRetentionRangeInDays": 7,
        "timeZone": "UTC",
        "schedulePolicy": {"schedulePolicyType": "SimpleSchedulePolicyV2", "scheduleRunFrequency": "Hourly",
                           "hourlySchedule": {"interval": 4, "scheduleWindowDuration": 12,
                                              "scheduleWindowStartTime": "2023-06-01T08:00:00Z"},
                           "dailySchedule": None, "weeklySchedule": None},
        "retentionPolicy": {"retentionPolicyType": "LongTermRetentionPolicy",
                            "dailySchedule": {"retentionDuration": {"count": 30, "durationType": "Days"},
                                              "retentionTimes": ["2023-06-01T08:00:00Z"]}}}}

V2_DAILY = {
    "name": "EnhancedDaily", "properties": {
        "backupManagementType": "AzureIaasVM", "policyType": "V2", "instantRpRetentionRangeInDays": 7,
        "timeZone": "India Standard Time",
        "schedulePolicy": {"schedulePolicyType": "SimpleSchedulePolicyV2", "scheduleRunFrequency": "Daily",
                           "dailySchedule": {"scheduleRunTimes": ["2023-06-01T21:30:00Z"]}},
        "retentionPolicy": {"dailySchedule": {"retentionDuration": {"count": 45, "durationType": "Days"}}}}}


def test_a_v1_weekly_policy_from_az_reads_as_typed():
    """Schedule days and time, retention and the Windows time zone of an az export carry over."""
    policy = Policy.from_document(from_az_policy(json.loads(json.dumps(V1_WEEKLY))))
    assert policy.name == "Weekly" and policy.time_zone == "America/Los_Angeles"
    assert policy.schedule.frequency is Frequency.WEEKLY and policy.schedule.time.strftime("%H:%M") == "23:00"
    assert set(policy.schedule.days) == {Weekday.parse(d, field_name="days") for d in ("Sunday", "Wednesday")}
    assert (policy.retention.weekly_weeks, policy.retention.monthly_months, policy.instant_rp_days) == (12, 60, 5)


def test_an_enhanced_hourly_policy_from_az():
    """An Enhanced (V2) hourly policy keeps its interval and window."""
    policy = Policy.from_document(from_az_policy(V2_HOURLY))
    assert isinstance(policy.schedule, EnhancedSchedule)
    assert (policy.schedule.interval_hours, policy.schedule.window_hours) == (4, 12)
    assert policy.schedule.window_start.strftime("%H:%M") == "08:00"


def test_an_enhanced_daily_policy_from_az_is_refused_with_what_to_do():
    """vmsnap's Enhanced policies are hourly: an Enhanced daily export is refused, saying what to use instead."""
    with pytest.raises(ValidationError, match="Enhanced .* Daily .* --frequency Hourly"):
        from_az_policy(V2_DAILY)
    assert iana_time_zone("India Standard Time") in ("Asia/Calcutta", "Asia/Kolkata")


def test_vmsnap_documents_pass_through():
    """vmsnap's own document (policy show -o json) is read as before, Windows zone names mapped."""
    doc = {"name": "P", "timeZone": "W. Europe Standard Time",
           "schedulePolicy": {"scheduleRunFrequency": "Daily", "scheduleRunTimes": ["22:30"]}}
    assert from_az_policy(doc)["timeZone"] == "Europe/Berlin"
    assert from_az_policy(doc)["schedulePolicy"] == doc["schedulePolicy"]


@pytest.mark.parametrize("name,iana", [("W. Europe Standard Time", "Europe/Berlin"), ("UTC", "UTC"),
                                       ("tokyo standard time", "Asia/Tokyo"), ("Europe/Paris", "Europe/Paris")])
def test_windows_time_zones_map_to_iana(name, iana):
    """Windows names (any case) map through CLDR's table; IANA names stay as they are."""
    assert iana_time_zone(name) == iana


def test_other_workloads_and_deep_documents_are_refused():
    """A SQL policy or a document nested beyond any policy's depth is a clear validation error."""
    with pytest.raises(ValidationError, match="AzureWorkload"):
        from_az_policy({"name": "S", "properties": {"backupManagementType": "AzureWorkload"}})
    deep: dict = {}
    for _ in range(200):
        deep = {"x": deep}
    with pytest.raises(ValidationError, match="nested"):
        check_depth(deep)
