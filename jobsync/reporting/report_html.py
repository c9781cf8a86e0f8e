"""``jobsync report html``: one self-contained HTML file, readable without any network.

Everything is inline: the CSS, and the charts as SVG drawn here in Python (no script, no
font, no image is fetched). Every string that comes from the database (job ids, collection
names, failure reasons) is hostile input and passes through :func:`html.escape`, in text and
in attributes alike.
"""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from jobsync._version import __version__
from jobsync.domain.states import CANONICAL_STATES
from jobsync.reporting import report as r
from jobsync.reporting.report_text import for_people, format_seconds, people_columns

__all__ = ["COLOURS", "Options", "ReportData", "build_html", "gather", "render_page"]

# One colour per meaning, used nowhere else on the page (tests look for them in screenshots).
COLOURS = {
    "Completed": "#2e9e5b",
    "Failed": "#d64545",
    "Importing": "#3b7dd8",
    "Pending": "#e0a030",
    "Unknown": "#8a8a8a",
    "box": "#7b5cc4",
    "reason": "#e8663d",
}
MAX_COLLECTIONS = 12
MAX_TABLE_ROWS = 200
WIDTH = 960
_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200)


@dataclass(frozen=True)
class Options:
    since: float = 7 * 86400.0
    days: int = 14
    older_than: float = 2 * 3600.0
    now: datetime | None = None
    cluster_ids: tuple[str, ...] = ()
    collections: tuple[str, ...] = ()


@dataclass
class ReportData:
    options: Options
    now: datetime
    summary: list[dict[str, Any]] = field(default_factory=list)
    states_per_day: list[dict[str, Any]] = field(default_factory=list)
    durations: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    active: list[dict[str, Any]] = field(default_factory=list)
    stuck: list[dict[str, Any]] = field(default_factory=list)


def build_html(engine: Engine, options: Options) -> str:
    """Read every report the page shows and render it."""
    return render_page(gather(engine, options))


def gather(engine: Engine, options: Options) -> ReportData:
    now = options.now or datetime.now(UTC)
    scope: dict[str, Any] = {
        "now": now,
        "cluster_ids": options.cluster_ids,
        "collections": options.collections,
    }
    active = r.active(engine, **scope)
    stuck_since = r.stuck_since(now, options.older_than)
    return ReportData(
        options=options,
        now=now,
        summary=r.summary(engine, since=options.since, **scope),
        states_per_day=r.states_per_day(engine, days=options.days, **scope),
        durations=r.durations(engine, since=options.since, **scope),
        failures=r.failures(engine, since=options.since, **scope),
        active=active,
        stuck=[row for row in active if row["state_since"] < stuck_since],
    )


def render_page(data: ReportData) -> str:
    o = data.options
    scope = ", ".join(o.cluster_ids) or "all clusters"
    if o.collections:
        scope += "; collections " + ", ".join(o.collections)
    since = format_seconds(o.since)
    parts = [
        f"<h1>jobsync report</h1><p class='meta'>Generated {_e(_when(data.now))} for "
        f"{_e(scope)} by jobsync {_e(__version__)}. Period: the last {_e(since)}; "
        f"daily charts: the last {o.days} UTC days; stuck: in their state for more than "
        f"{_e(format_seconds(o.older_than))}.</p>",
        _section("Summary", f"jobs first seen or finished in the last {since}", _summary(data)),
        _section(
            "Jobs per day by state",
            "jobs first seen each UTC day whose start a pass saw, by the state they are in now",
            _stacked_days(data.states_per_day),
        ),
        _section(
            "Duration per collection",
            f"estimated seconds of jobs finished in the last {since} whose start a pass saw: "
            "whiskers min to max, box from p25 to p75, line at the median",
            _box_plot(data.durations),
        ),
        _section(
            "Top failure reasons",
            f"failures of the last {since}, ids, numbers, paths and quoted text ignored",
            _reason_bars(data.failures),
        ),
        _section(
            f"Stuck jobs ({len(data.stuck)})",
            f"active jobs in their state for more than {format_seconds(o.older_than)}",
            _jobs_table(data.stuck, "stuck"),
        ),
        _section(
            f"Active jobs ({len(data.active)})",
            "not finished and not vanished, longest in their state first",
            _jobs_table(data.active, "active"),
        ),
    ]
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width, initial-scale=1'>"
        f"<title>jobsync report {_e(_when(data.now))}</title><style>{_CSS}</style></head>"
        f"<body><main>{''.join(parts)}</main></body></html>\n"
    )


# -- charts ---------------------------------------------------------------------------------


def _stacked_days(rows: Sequence[dict[str, Any]]) -> str:
    totals = [sum(row[s] for s in CANONICAL_STATES) for row in rows]
    note = _backlog_note(rows)
    if not rows or not any(totals):
        return _empty("No job whose start a pass saw was first seen in these days.") + note
    left, top, plot_h, height = 48, 12, 220, 280
    slot = (WIDTH - left - 8) / len(rows)
    # Whole pixels everywhere, so that bars are crisp (and their colours exact in a screenshot).
    bar_w = max(2, round(slot * 0.7))
    ticks = _ticks(max(totals), (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000))
    scale = plot_h / ticks[-1]
    out = _y_grid(ticks, left, top, plot_h)
    label_every = max(1, len(rows) // 14)
    base = top + plot_h
    for i, row in enumerate(rows):
        x = round(left + i * slot + (slot - bar_w) / 2)
        below = 0
        for state in CANONICAL_STATES:
            n = row[state]
            if not n:
                continue
            y, bottom = round(base - (below + n) * scale), round(base - below * scale)
            below += n
            tip = f"{row['day']} {state}: {n}"
            out.append(
                f"<rect class='bar seg' data-state='{state}' x='{x}' y='{y}' width='{bar_w}' "
                f"height='{bottom - y}' fill='{COLOURS[state]}'><title>{_e(tip)}</title></rect>"
            )
        if i % label_every == 0:
            out.append(
                f"<text x='{x + bar_w / 2:.1f}' y='{top + plot_h + 16}' "
                f"text-anchor='middle'>{_e(str(row['day'])[5:])}</text>"
            )
    legend = "".join(
        f"<span><span class='swatch' style='background:{COLOURS[s]}'></span>{s}</span>"
        for s in CANONICAL_STATES
    )
    return _svg("days", height, out) + f"<div class='legend'>{legend}</div>" + note


def _backlog_note(rows: Sequence[dict[str, Any]]) -> str:
    """What the daily bars leave out: a first sync's backlog would dwarf every other day."""
    counts = [(row.get("backlog", 0), row["day"]) for row in rows]
    total = sum(n for n, _day in counts)
    if not total:
        return ""
    most, day = max(counts)
    return (
        f"<p class='note'>Not drawn: {total} jobs that came with the backlog (listed by a "
        f"source's first pass, or first seen already finished), {most} of them on "
        f"{_e(str(day))}.</p>"
    )


def _box_plot(durations: Sequence[dict[str, Any]]) -> str:
    values: dict[str, list[float]] = defaultdict(list)
    for row in durations:
        # The backlog's estimates rest on windows as long as the gap before the first pass.
        if row["estimated_seconds"] is not None and not row["backlog"]:
            values[row["collection_name"] or "(no collection)"].append(row["estimated_seconds"])
    if not values:
        return _empty("No finished job with a known duration in this period.")
    shown = sorted(values, key=lambda c: (-len(values[c]), c))[:MAX_COLLECTIONS]
    left, row_h, top = 200, 30, 8
    plot_w = WIDTH - left - 24
    ticks = _ticks(max(max(values[c]) for c in shown), _STEPS)
    scale = plot_w / ticks[-1]
    height = top + row_h * len(shown) + 26
    out = _x_grid(ticks, left, top, row_h * len(shown), scale)
    for i, collection in enumerate(shown):
        v = values[collection]
        lo, q1, med, q3, hi = (r.nearest_rank(v, p) or 0.0 for p in (0, 25, 50, 75, 100))
        y = top + i * row_h + row_h // 2
        x1, x3 = round(left + q1 * scale), round(left + q3 * scale)
        box_w = max(6, x3 - x1)
        x1 = min(x1, left + plot_w - box_w)
        x_med = round(left + med * scale)
        tip = (
            f"{collection}: {len(v)} jobs, min {format_seconds(lo)}, p25 "
            f"{format_seconds(q1)}, median {format_seconds(med)}, p75 "
            f"{format_seconds(q3)}, max {format_seconds(hi)}"
        )
        out += [
            f"<text x='{left - 8}' y='{y + 4}' text-anchor='end'>{_e(_clip(collection, 28))}"
            f" ({len(v)})</text>",
            f"<line x1='{left + lo * scale:.1f}' x2='{left + hi * scale:.1f}' y1='{y + 0.5}' "
            f"y2='{y + 0.5}' stroke='#444'/>",
            f"<rect class='box' x='{x1}' y='{y - 9}' width='{box_w}' height='18' "
            f"fill='{COLOURS['box']}'><title>{_e(tip)}</title></rect>",
            f"<line x1='{x_med}' x2='{x_med}' y1='{y - 9}' y2='{y + 9}' stroke='#fff' "
            "stroke-width='2'/>",
        ]
    more = len(values) - len(shown)
    note = f"<p class='note'>{more} more collections not shown.</p>" if more > 0 else ""
    return _svg("durations", height, out) + note


def _reason_bars(failures: Sequence[dict[str, Any]]) -> str:
    if not failures:
        return _empty("No failures in this period.")
    left, row_h, top = 360, 26, 4
    plot_w = WIDTH - left - 48
    scale = plot_w / max(row["jobs"] for row in failures)
    out = []
    for i, row in enumerate(failures):
        y = top + i * row_h
        w = max(2, round(row["jobs"] * scale))
        tip = f"{row['jobs']} jobs; collections: {row['collections']}; e.g. {row['example']}"
        out += [
            f"<text x='{left - 8}' y='{y + 16}' text-anchor='end'>"
            f"{_e(_clip(row['reason'], 52))}<title>{_e(row['reason'])}</title></text>",
            f"<rect class='bar reason' x='{left}' y='{y + 3}' width='{w}' height='{row_h - 6}'"
            f" fill='{COLOURS['reason']}'><title>{_e(tip)}</title></rect>",
            f"<text x='{left + w + 6}' y='{y + 16}'>{row['jobs']}</text>",
        ]
    return _svg("failures", top + row_h * len(failures) + 4, out)


def _svg(name: str, height: int, body: list[str]) -> str:
    return (
        f"<svg class='chart' data-chart='{name}' viewBox='0 0 {WIDTH} {height}' width='{WIDTH}' "
        f"height='{height}' role='img'>{''.join(body)}</svg>"
    )


def _y_grid(ticks: list[float], left: int, top: int, plot_h: int) -> list[str]:
    out = []
    for t in ticks:
        y = top + plot_h - plot_h * t / ticks[-1]
        out.append(
            f"<line x1='{left}' x2='{WIDTH - 8}' y1='{y:.1f}' y2='{y:.1f}' class='grid'/>"
            f"<text x='{left - 6}' y='{y + 4:.1f}' text-anchor='end'>{_e(str(int(t)))}</text>"
        )
    return out


def _x_grid(ticks: list[float], left: int, top: int, plot_h: int, scale: float) -> list[str]:
    return [
        f"<line x1='{left + t * scale:.1f}' x2='{left + t * scale:.1f}' y1='{top}' "
        f"y2='{top + plot_h}' class='grid'/><text x='{left + t * scale:.1f}' "
        f"y='{top + plot_h + 16}' text-anchor='middle'>{_e(format_seconds(t))}</text>"
        for t in ticks
    ]


def _ticks(highest: float, steps: Sequence[int]) -> list[float]:
    """0 and evenly spaced round values up to the first at or above ``highest`` (at most ~6)."""
    highest = max(highest, 1.0)
    step = next((s for s in steps if highest / s <= 5), None)
    if step is None:
        step = steps[-1] * (int(highest / steps[-1] / 5) + 1)
    count = int(-(-highest // step))
    return [float(step * k) for k in range(count + 1)]


# -- tables ---------------------------------------------------------------------------------


def _summary(data: ReportData) -> str:
    if not data.summary:
        return _empty("No job was first seen or finished in this period.")
    return _table(for_people(data.summary), people_columns(r.SUMMARY_COLUMNS))


def _jobs_table(rows: Sequence[dict[str, Any]], kind: str) -> str:
    if not rows:
        return _empty(f"No {kind} jobs.")
    people = for_people(rows[:MAX_TABLE_ROWS])
    columns = people_columns(r.STUCK_COLUMNS)
    note = ""
    if len(rows) > MAX_TABLE_ROWS:
        note = f"<p class='note'>The first {MAX_TABLE_ROWS} of {len(rows)}.</p>"
    return _table(people, columns, cls=kind) + note


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str], cls: str = "") -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_e(_text(row.get(c)))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    return f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# -- small helpers --------------------------------------------------------------------------


def _section(title: str, subtitle: str, body: str) -> str:
    return f"<section><h2>{_e(title)}</h2><p class='sub'>{_e(subtitle)}</p>{body}</section>"


def _empty(message: str) -> str:
    return f"<p class='empty'>{_e(message)}</p>"


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return _when(value)
    return str(value)


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


_CSS = """
body{margin:0;background:#f6f7f9;color:#1d2330;font:14px/1.45 system-ui,-apple-system,
"Segoe UI",Roboto,Helvetica,Arial,sans-serif}
main{max-width:1000px;margin:0 auto;padding:16px 20px 40px}
h1{font-size:22px;margin:8px 0 4px}h2{font-size:17px;margin:0}
.meta,.sub,.note{color:#5b6475;margin:2px 0 10px}
section{background:#fff;border:1px solid #e1e4ea;border-radius:6px;padding:14px 16px;
margin:14px 0;overflow-x:auto}
svg.chart{display:block;font-size:11px;fill:#39404d}
svg .grid{stroke:#e6e8ee}
.legend span{margin-right:14px;font-size:12px}
.legend .swatch{display:inline-block;width:10px;height:10px;margin-right:5px;border-radius:2px}
table{border-collapse:collapse;font-size:12.5px;width:100%}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eceef2;white-space:nowrap}
td{font-variant-numeric:tabular-nums;max-width:360px;overflow:hidden;text-overflow:ellipsis}
th{background:#f1f3f6}
.empty{color:#5b6475;font-style:italic}
"""
