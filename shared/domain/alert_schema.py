"""The Azure Monitor common alert schema document a webhook receives for an alert (``Fired`` or ``Resolved``):
the shape action groups, Logic Apps, Teams and PagerDuty integrations take (docs/monitoring.md, "Delivery")."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.clock import utc
from shared.domain.alerts import Alert
from shared.redaction import redact

SCHEMA_ID = "azureMonitorCommonAlertSchema"
MONITORING_SERVICE = "vmsnap"


def common_alert_schema(alert: Alert, condition: str) -> dict[str, Any]:
    """The alert as an Azure Monitor common alert schema notification (``Fired`` or ``Resolved``), the
    shape action groups, Logic Apps, Teams and PagerDuty integrations take. Never a SAS: every text
    is redacted once more on the way out."""
    essentials: dict[str, Any] = {
        "alertId": f"/vmsnap/alerts/{alert.name}",
        "alertRule": f"vmsnap-{alert.kind.value}",
        "severity": alert.severity,
        "signalType": "Log",
        "monitorCondition": condition,
        "monitoringService": MONITORING_SERVICE,
        "alertTargetIDs": [alert.target_id or alert.item],
        "configurationItems": [alert.item],
        "originAlertId": alert.name,
        "firedDateTime": _iso(alert.fired_at),
        "description": redact(alert.summary),
        "essentialsVersion": "1.0",
        "alertContextVersion": "1.0",
    }
    if condition == "Resolved" and alert.resolved_at is not None:
        essentials["resolvedDateTime"] = _iso(alert.resolved_at)
    context = {
        "kind": alert.kind.value,
        "item": alert.item,
        "policyName": alert.policy_name,
        "status": alert.status.value,
        "count": alert.count,
        "firstSeen": _iso(alert.fired_at),
        "lastSeen": _iso(alert.last_seen),
        "errorCode": alert.error_code,
        "errorTitle": redact(alert.error_title),
        "recommendations": [redact(r) for r in alert.recommendations],
        "occurrences": [{"key": o.key, "time": _iso(o.time), "seenAt": _iso(o.seen_at), "jobId": o.job_id,
                         "errorCode": o.error_code} for o in alert.occurrences],
        "resolvedBy": alert.resolved_by,
        "resolution": redact(alert.resolution) if alert.resolution else None,
        "resolvesWhen": alert.kind.resolved_by,
    }
    return {"schemaId": SCHEMA_ID, "data": {"essentials": essentials, "alertContext": context,
                                            "customProperties": None}}


def _iso(when: datetime) -> str:
    return utc(when).isoformat().replace("+00:00", "Z")
