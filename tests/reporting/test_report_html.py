"""``jobsync report html``: one self-contained file whose charts really draw, in headless Chromium.

A history is built by syncing the simulator several times while its jobs progress (on a sync
clock that moves six hours per pass, so the daily chart has several days). The page is
rendered by Chromium twice: once to a PNG, decoded here with zlib, where each chart's colour
must cover the area its data implies, in the chart's own band of the page; once with
``--dump-dom``, where the number of bars and boxes must match the data.

Without Chromium the rendering tests skip, unless ``JOBSYNC_TEST_REQUIRE_CHROMIUM=1`` (set by
``.ci/run``) makes that a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import zlib
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, insert, select

from jobsync.cli import cli
from jobsync.cli import report as cli_report
from jobsync.domain.clock import SteppingClock
from jobsync.domain.states import CANONICAL_STATES
from jobsync.reporting import report
from jobsync.reporting.report_html import COLOURS, Options, build_html, gather, render_page
from jobsync.service.sync import sync_all
from jobsync.storage.migrate import upgrade
from jobsync.storage.schema import import_job_records, import_job_transitions, sync_runs
from jobsync.storage.store import open_engine
from tests.conftest import insert_job_record, settings_for

START = datetime(2024, 5, 1, 0, 0, tzinfo=UTC)
PASSES = 12
STEP = timedelta(hours=6)
REQUIRE_CHROMIUM = os.environ.get("JOBSYNC_TEST_REQUIRE_CHROMIUM") == "1"


def chromium() -> str:
    found = next(
        (p for p in ("/usr/bin/chromium", shutil.which("chromium")) if p and os.path.exists(p)),
        None,
    )
    if found is None:
        message = (
            "chromium is not installed (looked for /usr/bin/chromium and on PATH): "
            "`apt-get install chromium` to run the HTML rendering tests"
        )
        if REQUIRE_CHROMIUM:
            pytest.fail(message + " [required: JOBSYNC_TEST_REQUIRE_CHROMIUM=1]")
        pytest.skip(message)
    return found


@pytest.fixture
def synced(sim, db_url):
    """Twelve passes, six sync-hours apart, with jobs advancing and new ones arriving."""
    engine = open_engine(db_url)
    upgrade(engine)
    clock = SteppingClock(START)
    settings = settings_for(sim, db_url)
    for n in range(PASSES):
        assert all(result.ok for result in sync_all(engine, settings, clock=clock))
        clock.skip(STEP)
        sim.advance(fraction=0.5)
        if n < PASSES - 3:
            sim.add_jobs(6)
    yield engine, clock.now
    engine.dispose()


def render_in_chromium(html_file: Path, tmp_path: Path) -> tuple[bytes, str]:
    """The page as a PNG screenshot and as the DOM Chromium built, with no network at all."""
    browser = chromium()
    common = [
        browser,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--force-device-scale-factor=1",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ]
    png = tmp_path / "report.png"
    url = html_file.resolve().as_uri()
    subprocess.run(
        [*common, f"--screenshot={png}", "--window-size=1100,2400", url],
        check=True,
        capture_output=True,
        timeout=120,
    )
    dom = subprocess.run(
        [*common, "--dump-dom", url], check=True, capture_output=True, timeout=120, text=True
    ).stdout
    return png.read_bytes(), dom


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB rows of an 8-bit RGB or RGBA PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert header is not None
    width, height, depth, colour_type, _, _, interlace = header
    assert depth == 8 and colour_type in (2, 6) and interlace == 0, header
    bpp = 3 if colour_type == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        filter_type = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up = previous[i]
            upper_left = previous[i - bpp] if i >= bpp else 0
            if filter_type == 1:
                line[i] = (line[i] + left) & 0xFF
            elif filter_type == 2:
                line[i] = (line[i] + up) & 0xFF
            elif filter_type == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif filter_type == 4:
                p = left + up - upper_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - upper_left)
                pred = left if pa <= pb and pa <= pc else (up if pb <= pc else upper_left)
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line) if bpp == 3 else bytes(b for j, b in enumerate(line) if j % 4 != 3))
        previous = line
    return width, height, rows


def colour_boxes(rows: list[bytes], width: int) -> dict[str, tuple[int, int, int]]:
    """Per chart colour: (pixels, first row, last row) where it appears exactly."""
    wanted = {bytes.fromhex(hex_[1:]): name for name, hex_ in COLOURS.items()}
    found: dict[str, list[int]] = {}
    for y, row in enumerate(rows):
        for x in range(width):
            name = wanted.get(row[3 * x : 3 * x + 3])
            if name is not None:
                entry = found.setdefault(name, [0, y, y])
                entry[0] += 1
                entry[2] = y
    return {name: (n, first, last) for name, (n, first, last) in found.items()}


class References(HTMLParser):
    """Every tag, and every attribute or stylesheet text that could fetch something."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.fetching: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._in_style = tag == "style"
        for name, value in attrs:
            if name in ("src", "href", "xlink:href", "srcset", "poster", "data", "action"):
                self.fetching.append(f"{tag} {name}={value}")
            if name == "style" and value and re.search(r"url\(|@import", value, re.I):
                self.fetching.append(f"{tag} style={value}")

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style and re.search(r"url\(|@import|https?://", data, re.I):
            self.fetching.append(f"style: {data[:80]}")


def references(html: str) -> References:
    parser = References()
    parser.feed(html)
    return parser


def test_the_report_draws_every_chart_in_chromium(synced, tmp_path, monkeypatch):
    engine, now = synced
    options = Options(since=7 * 86400, days=5, older_than=2 * 3600, now=now)
    data = gather(engine, options)
    # The history has what the charts need: finished jobs with estimates and failures.
    assert sum(row["Completed"] for row in data.states_per_day) > 0
    assert sum(row["Failed"] for row in data.states_per_day) > 0
    assert any(row["estimated_seconds"] for row in data.durations)
    assert data.failures and data.active
    html = build_html(engine, options)
    page = tmp_path / "report.html"
    page.write_text(html, encoding="utf-8")

    png, dom = render_in_chromium(page, tmp_path)

    # The DOM Chromium built has one bar per (day, state) with jobs, one box per collection,
    # one bar per failure reason.
    segments = sum(1 for row in data.states_per_day for s in COLOURS if row.get(s))
    collections = {
        row["collection_name"]
        for row in data.durations
        if row["estimated_seconds"] and not row["backlog"]
    }
    assert len(re.findall(r'<rect class="bar seg"', dom)) == segments
    assert len(re.findall(r'<rect class="box"', dom)) == min(len(collections), 12)
    assert len(re.findall(r'<rect class="bar reason"', dom)) == len(data.failures)

    width, height, rows = decode_png(png)
    assert (width, height) == (1100, 2400)
    painted = colour_boxes(rows, width)
    drawn = rect_areas(dom)
    # Every colour covers the area of its bars, in whole pixels: stacked bars exactly (plus a
    # legend swatch of at most 100 pixels), failure bars exactly, boxes less their median line.
    for state in ("Completed", "Failed"):
        assert drawn[state] > 500, drawn
        assert 0 <= painted[state][0] - drawn[state] <= 100, (state, painted, drawn)
    assert painted["reason"][0] == drawn["reason"] > 2000
    boxes = min(len(collections), 12)
    assert drawn["box"] - 2 * 18 * boxes <= painted["box"][0] <= drawn["box"]
    # The charts stand in their own bands, in page order: days, durations, failure reasons.
    days_end = max(painted[s][2] for s in ("Completed", "Failed"))
    assert days_end < painted["box"][1] <= painted["box"][2] < painted["reason"][1]


def test_the_daily_bars_and_the_durations_leave_the_backlog_out_and_say_so(synced):
    engine, now = synced
    options = Options(since=7 * 86400, days=5, older_than=2 * 3600, now=now)
    data = gather(engine, options)
    records = import_job_records.c
    with engine.connect() as conn:
        backlog = conn.execute(
            select(func.count()).where(records.backlog == True)  # noqa: E712
        ).scalar_one()
        observed = conn.execute(
            select(func.count()).where(records.backlog == False)  # noqa: E712
        ).scalar_one()

    # Every job was first seen within the chart's five days: the first pass's are the backlog.
    assert sum(row["backlog"] for row in data.states_per_day) == backlog > 0
    drawn = sum(row[state] for row in data.states_per_day for state in CANONICAL_STATES)
    assert drawn == observed > 0
    html = render_page(data)
    # All on the first pass's day (the others' jobs all appeared after a pass saw them start).
    assert (
        f"Not drawn: {backlog} jobs that came with the backlog (listed by a source's first "
        f"pass, or first seen already finished), {backlog} of them on 2024-05-01." in html
    )
    # The box plot rests on jobs whose start a pass saw: a backlog job's estimate (a job first
    # seen already finished has one) is not in it.
    boxed = {r["collection_name"] for r in data.durations if r["estimated_seconds"]}
    assert boxed and all(not r["backlog"] for r in data.durations if r["estimated_seconds"])
    first_seen_finished = {**data.durations[0], "collection_name": "short_ones", "backlog": True}
    data.durations.append({**first_seen_finished, "estimated_seconds": 600.0})
    html = render_page(data)
    assert len(re.findall(r"<rect class='box'", html)) == min(len(boxed), 12)
    assert "short_ones" not in html


def rect_areas(dom: str) -> dict[str, int]:
    """Total width x height of the chart rectangles in the DOM, per colour name."""
    names = {hex_: name for name, hex_ in COLOURS.items()}
    areas: dict[str, int] = {}
    for attrs in re.findall(r"<rect ([^>]*)>", dom):
        values = dict(re.findall(r'([\w-]+)="([^"]*)"', attrs))
        name = names.get(values.get("fill", ""))
        if name is not None:
            area = int(values["width"]) * int(values["height"])
            areas[name] = areas.get(name, 0) + area
    return areas


def test_the_report_needs_no_network(synced, tmp_path):
    engine, now = synced
    html = build_html(engine, Options(now=now))

    found = references(html)
    assert found.fetching == []
    assert not {"script", "link", "img", "iframe", "object", "embed"} & set(found.tags)
    assert "@import" not in html and "url(" not in html
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.I)
    # The svg elements need no namespace URL inside HTML; none is written.
    assert "http://" not in html and "https://" not in html


HOSTILE_JOB = "<script>alert(1)</script>"
HOSTILE_COLLECTION = "\"'><img src=x onerror=alert(2)>"
HOSTILE_REASON = '<img src="https://evil.example/x.png"> & <link rel=stylesheet href="//e.x/s.css">'


@pytest.fixture
def hostile(db_url):
    engine = open_engine(db_url)
    upgrade(engine)
    at = datetime(2024, 5, 10, 9, 0, tzinfo=UTC)
    with engine.begin() as conn:
        run = conn.execute(
            insert(sync_runs)
            .values(cluster_id="c<b>", started_at=at, finished_at=at, status="succeeded")
            .returning(sync_runs.c.id)
        ).scalar_one()
        for job, state, observed in (
            ("1" + HOSTILE_JOB, "Failed", at),
            (HOSTILE_JOB, "Pending", at),
        ):
            conn.execute(
                insert(import_job_transitions).values(
                    cluster_id="c<b>",
                    job_id=job,
                    kind="first_seen",
                    to_state=state,
                    window_start=observed - timedelta(hours=1),
                    observed_at=observed,
                    sync_run_id=run,
                    reason=HOSTILE_REASON if state == "Failed" else None,
                )
            )
            insert_job_record(
                conn,
                cluster_id="c<b>",
                job_id=job,
                state=state,
                seen_at=observed,
                collection_name=HOSTILE_COLLECTION,
                raw_state=state + "<i>",
                reason=HOSTILE_REASON if state == "Failed" else None,
                finished_at=observed if state == "Failed" else None,
                listed=False,
            )
    yield engine
    engine.dispose()


def test_every_database_string_is_escaped(hostile, tmp_path):
    html = build_html(hostile, Options(now=datetime(2024, 5, 10, 12, tzinfo=UTC)))

    found = references(html)
    assert not {"script", "img", "link", "b", "i"} & set(found.tags)
    assert found.fetching == []
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&quot;&#x27;&gt;&lt;img src=x onerror=alert(2)&gt;" in html
    assert "&lt;img src=&quot;https://evil.example/x.png&quot;&gt; &amp; &lt;link" in html
    # The stuck table shows the hostile job (3 hours in Pending), escaped.
    assert report.stuck(hostile, older_than=7200, now=datetime(2024, 5, 10, 12, tzinfo=UTC))

    page = tmp_path / "hostile.html"
    page.write_text(html, encoding="utf-8")
    _png, dom = render_in_chromium(page, tmp_path)
    assert not re.search(r"<(script|img|link)\b", dom)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom


def test_report_html_command_writes_the_file_or_standard_output(
    synced, db_url, tmp_path, monkeypatch
):
    _engine, now = synced
    monkeypatch.setattr(cli_report, "clock", lambda: now)
    monkeypatch.delenv("JOBSYNC_CLUSTER_ID", raising=False)
    target = tmp_path / "out.html"
    periods = ["--days", "3", "--since", "2d", "--older-than", "30m"]

    def html(*args: str):
        command = ["report", "html", "--db", db_url, *args, *periods]
        return CliRunner().invoke(cli, command, catch_exceptions=False)

    written = html("-o", str(target))
    assert written.exit_code == 0, written.output
    assert written.output.startswith(f"wrote {target}")
    page = target.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "the last 3 UTC days" in page
    assert "in their state for more than 30m" in page

    streamed = html("--output", "-")
    assert streamed.exit_code == 0 and streamed.output == page

    bad = CliRunner().invoke(
        cli, ["report", "html", "--db", db_url, "-o", str(tmp_path / "no" / "x.html")]
    )
    assert bad.exit_code == 2 and bad.output.startswith("Error: cannot write")
