"""The dashboard's charts: inline SVG drawn on the server from the API's documents, with no script and no
style attribute (colours come from classes in the page's style sheet, which the CSP admits by its hash).
Every text (a VM or policy name, a status) is escaped here; each chart has a title for screen readers and
a <title> per mark for the tooltip."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable, Sequence

from markupsafe import Markup, escape

WIDTH = 640
ROW = 22
LABEL = 170             # room for a label left of a bar
STATE_CLASSES = {"Healthy": "ok", "AtRisk": "warn", "Unprotected": "bad"}
OUTCOME_CLASSES = {"Completed": "ok", "CompletedWithWarnings": "warn", "Failed": "bad", "Cancelled": "muted",
                   "InProgress": "info"}


def _attrs(values: dict[str, object]) -> str:
    return "".join(f' {name.rstrip("_").replace("_", "-")}="{escape(str(value))}"' for name, value in values.items()
                   if value is not None)


def _el(tag: str, children: Iterable[str] = (), **attrs: object) -> Markup:
    inner = "".join(str(child) for child in children)
    return Markup(f"<{tag}{_attrs(attrs)}>{inner}</{tag}>")


def _title(text: str) -> Markup:
    return _el("title", [escape(text)])


def _svg(title: str, height: float, children: Sequence[str]) -> Markup:
    return _el("svg", [_title(title), *children], xmlns="http://www.w3.org/2000/svg", role="img",
               viewBox=f"0 0 {WIDTH} {height:g}", width=WIDTH, height=f"{height:g}", class_="chart",
               aria_label=title)


def _stacked(y: float, parts: Sequence[tuple[str, int, str]], total: int, x0: float = 0.0,
             width: float = WIDTH) -> list[Markup]:
    """One horizontal bar split into (label, count, class) parts in proportion."""
    marks, x = [], x0
    for label, count, cls in parts:
        if count <= 0 or total <= 0:
            continue
        w = width * count / total
        marks.append(_el("rect", [_title(f"{label}: {count}")], x=f"{x:.1f}", y=f"{y:.1f}", width=f"{w:.1f}",
                         height=ROW - 6, class_=f"bar {cls}"))
        x += w
    if not marks:
        marks.append(_el("rect", [_title("none")], x=f"{x0:.1f}", y=f"{y:.1f}", width=f"{width:.1f}",
                         height=ROW - 6, class_="bar empty"))
    return marks


def state_bar(summary: dict[str, int]) -> Markup:
    """Items by state (the report's ``summary``) as one bar: Healthy, AtRisk, Unprotected."""
    parts = [("Healthy", summary.get("healthy", 0), "ok"), ("AtRisk", summary.get("atRisk", 0), "warn"),
             ("Unprotected", summary.get("unprotected", 0), "bad")]
    total = sum(count for _, count, _ in parts)
    legend = [_el("text", [escape(f"{label} {count}")], x=i * 200, y=ROW + 14, class_=f"legend {cls}")
              for i, (label, count, cls) in enumerate(parts)]
    return _svg(f"items by state: {', '.join(f'{label} {count}' for label, count, _ in parts)}", ROW + 22,
                [*_stacked(0, parts, total), *legend])


def compliance_bars(policies: Sequence[dict[str, Any]]) -> Markup:
    """Slot compliance per policy (the report's ``policies``): a bar per policy, its ratio and counts."""
    marks: list[Markup] = []
    for i, policy in enumerate(policies):
        y = i * ROW
        slots = policy["slots"]
        ratio = slots["compliance"]
        text = "no slot due yet" if ratio is None else f"{ratio:.1%} ({slots['met']}/{slots['met'] + slots['missed']})"
        cls = "muted" if ratio is None else "ok" if ratio >= 0.99 else "warn" if ratio >= 0.9 else "bad"
        bar = (WIDTH - LABEL - 130) * (ratio or 0.0)
        marks += [_el("text", [escape(_short(policy["name"], 24))], x=0, y=y + 13, class_="label"),
                  _el("rect", x=LABEL, y=y + 2, width=WIDTH - LABEL - 130, height=ROW - 6, class_="bar empty"),
                  _el("rect", [_title(f"{policy['name']}: {text}")], x=LABEL, y=y + 2, width=f"{bar:.1f}",
                      height=ROW - 6, class_=f"bar {cls}"),
                  _el("text", [escape(text)], x=WIDTH - 122, y=y + 13, class_="value")]
    return _svg("slot compliance per policy", max(len(policies), 1) * ROW, marks)


def outcome_bars(counts: dict[str, dict[str, int]]) -> Markup:
    """The last day's jobs by operation and outcome: one stacked bar per operation."""
    marks: list[Markup] = []
    for i, (operation, tally) in enumerate(counts.items()):
        y = i * ROW
        total = sum(tally.values())
        parts = [(status, tally.get(status, 0), cls) for status, cls in OUTCOME_CLASSES.items()]
        marks += [_el("text", [escape(f"{operation} ({total})")], x=0, y=y + 13, class_="label"),
                  *_stacked(y + 2, parts, total, LABEL, WIDTH - LABEL)]
    return _svg("jobs of the last 24 hours by outcome", max(len(counts), 1) * ROW, marks)


def rpo_gauge(achieved: int | None, target: int) -> Markup:
    """The achieved RPO against the target: a bar to the achieved age, a mark at the target."""
    scale = max(achieved or 0, target) * 1.2 or 1
    width = WIDTH - 20
    cls = "bad" if achieved is None else "warn" if achieved > target else "ok"
    marks = [_el("rect", x=0, y=4, width=width, height=ROW - 6, class_="bar empty")]
    if achieved is not None:
        marks.append(_el("rect", [_title(f"achieved RPO {achieved} s")], x=0, y=4,
                         width=f"{width * achieved / scale:.1f}", height=ROW - 6, class_=f"bar {cls}"))
    x = width * target / scale
    marks += [_el("line", [_title(f"target RPO {target} s")], x1=f"{x:.1f}", x2=f"{x:.1f}", y1=0, y2=ROW + 2,
                  class_="target"),
              _el("text", ["target"], x=f"{max(x - 40, 0):.1f}", y=ROW + 14, class_="legend")]
    return _svg("achieved RPO against the policy's target", ROW + 20, marks)


def timeline(points: Sequence[dict[str, Any]], start: datetime, end: datetime, target_seconds: int | None) -> Markup:
    """A VM's recovery points on a time axis from ``start`` to ``end``: a mark per point in that span (by
    state), and the span a point must fall in to keep the item within its target RPO."""
    moments = [(datetime.fromisoformat(p["recoveryPointTime"].replace("Z", "+00:00")), p) for p in points]
    shown = [(moment, p) for moment, p in moments if start <= moment <= end]
    span = max((end - start).total_seconds(), 1.0)
    width = WIDTH - 20

    def x_of(moment: datetime) -> float:
        return 10 + width * min(max((moment - start).total_seconds() / span, 0.0), 1.0)

    marks = [_el("line", x1=10, x2=10 + width, y1=30, y2=30, class_="axis")]
    if target_seconds is not None:
        left = x_of(datetime.fromtimestamp(end.timestamp() - target_seconds, tz=end.tzinfo))
        marks.append(_el("rect", [_title("within the target RPO")], x=f"{left:.1f}", y=12,
                         width=f"{10 + width - left:.1f}", height=36, class_="window"))
    for moment, point in shown:
        cls = "ok" if point["state"] == "Available" else "bad"
        marks.append(_el("circle", [_title(f"{point['name']} {point['recoveryPointTime']} {point['state']}")],
                         cx=f"{x_of(moment):.1f}", cy=30, r=5, class_=f"point {cls}"))
    marks += [_el("text", [escape(start.strftime("%Y-%m-%d"))], x=10, y=62, class_="legend"),
              _el("text", [escape(end.strftime("%Y-%m-%d %H:%M"))], x=WIDTH - 120, y=62, class_="legend")]
    return _svg(f"{len(shown)} recovery point(s) from {start:%Y-%m-%d} to {end:%Y-%m-%d}", 68, marks)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
