"""Envelopes and list pages in every known variant of the APIs (pure, no HTTP)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobsync.api.envelope import parse_envelope
from jobsync.domain.records import _record, _usual_record, clean_text, parse_list_data
from jobsync.domain.states import canonical_state
from jobsync.errors import ApiStatusError, AuthError, ProtocolError

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("code", [0, 200, "0", "200"])
def test_success_codes_in_every_spelling(code):
    assert parse_envelope(200, {"code": code, "data": {"x": 1}}) == {"x": 1}


@pytest.mark.parametrize("code", [False, True, 1, "ok", None, 0.0])
def test_anything_else_is_not_success(code):
    with pytest.raises((ApiStatusError, ProtocolError)):
        parse_envelope(200, {"code": code, "data": {}})


@pytest.mark.parametrize(
    ("status", "payload"),
    [
        (200, {"code": 80001, "message": "Invalid token"}),
        (200, {"code": "80002"}),
        (200, {"code": 21119, "message": "The apikey is illegal."}),
        (401, {"code": 1800, "message": "unauthenticated"}),
        (403, {"message": "forbidden"}),
    ],
)
def test_rejected_keys_are_auth_errors(status, payload):
    with pytest.raises(AuthError, match="API key was rejected"):
        parse_envelope(status, payload)


def test_error_envelope_carries_status_code_and_truncated_message():
    with pytest.raises(ApiStatusError) as info:
        parse_envelope(200, {"code": 96018, "message": "cluster not found " + "x" * 1000})
    assert info.value.code == 96018 and info.value.http_status == 200
    assert len(str(info.value)) < 400


def test_success_without_message_and_error_without_data_are_fine():
    assert parse_envelope(200, {"code": 0}) is None
    with pytest.raises(ApiStatusError):
        parse_envelope(200, {"code": 96008})


def test_records_under_records_tasks_or_a_bare_list():
    record = {"jobId": "1", "collectionName": "c", "state": "Completed"}
    for data in ({"records": [record]}, {"tasks": [record]}, [record]):
        page = parse_list_data(data, NOW)
        assert [r.job_id for r in page.records] == ["1"]


@pytest.mark.parametrize("key", ["jobId", "jobID", "taskID"])
def test_every_id_key(key):
    assert parse_list_data({"records": [{key: "job-x"}]}, NOW).records[0].job_id == "job-x"


def test_numeric_ids_become_text():
    page = parse_list_data({"records": [{"jobId": 448761313698322011}]}, NOW)
    assert page.records[0].job_id == "448761313698322011"


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"jobId": None},
        {"jobId": ""},
        {"jobId": "  "},
        {"jobId": True},
        {"jobId": [1]},
        {"jobId": {"a": 1}},
        {"jobId": 1.5},
        "a string",
        17,
        None,
        ["list"],
    ],
)
def test_unidentifiable_records_are_skipped_and_counted(bad):
    page = parse_list_data({"records": [bad, {"jobId": "ok"}]}, NOW)
    assert [r.job_id for r in page.records] == ["ok"]
    assert page.invalid == 1 and page.size == 2


@pytest.mark.parametrize(("raw", "count"), [(5, 5), ("5", 5), (None, None)])
def test_count_as_number_string_or_absent(raw, count):
    assert parse_list_data({"count": raw, "records": []}, NOW).count == count


@pytest.mark.parametrize("raw", [-1, "many", True, 1.5])
def test_nonsense_count_is_a_protocol_error(raw):
    with pytest.raises(ProtocolError):
        parse_list_data({"count": raw, "records": []}, NOW)


def test_data_of_the_wrong_shape_is_a_protocol_error():
    with pytest.raises(ProtocolError):
        parse_list_data({"records": "nope"}, NOW)
    with pytest.raises(ProtocolError):
        parse_list_data("nope", NOW)
    with pytest.raises(ProtocolError):
        parse_list_data({"count": 3}, NOW)


@pytest.mark.parametrize(
    "data",
    [None, {}, {"records": None}, {"tasks": None}, {"count": None}, {"records": None, "count": 3}],
)
def test_a_success_answer_without_a_listing_is_a_protocol_error(data):
    """Taken as an empty list, such an answer would mark every stored job vanished."""
    with pytest.raises(ProtocolError, match="no listing"):
        parse_list_data(data, NOW)


@pytest.mark.parametrize("data", [{"count": 0}, {"count": "0", "records": None}, []])
def test_an_empty_list_said_in_so_many_words_is_empty(data):
    page = parse_list_data(data, NOW)
    assert (page.records, page.size) == ([], 0)


def test_progress_and_reason_are_kept_when_given():
    page = parse_list_data(
        {
            "records": [
                {"jobId": "1", "progress": 40, "reason": "disk full"},
                {"jobId": "2", "reason": ""},
            ]
        },
        NOW,
    )
    assert (page.records[0].progress, page.records[0].reason) == (40, "disk full")
    assert page.records[1].reason is None


def test_text_policy_replaces_nul_and_lone_surrogates_only():
    assert clean_text("a\x00b") == "a\ufffdb"
    assert clean_text("x\ud800y") == "x\ufffdy"
    assert clean_text("ok ✓ 'quote'; DROP TABLE") == "ok ✓ 'quote'; DROP TABLE"


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("Pending", "Pending"),
        ("ImportPending", "Pending"),
        ("Importing", "Importing"),
        ("InProgress", "Importing"),
        ("ImportRunning", "Importing"),
        ("ImportStarted", "Importing"),
        ("ImportPersisted", "Importing"),
        ("PreImporting", "Importing"),
        ("IndexBuilding", "Importing"),
        ("Sorting", "Importing"),
        ("Stats", "Importing"),
        ("Uncommitted", "Importing"),
        ("Committing", "Importing"),
        ("Retry", "Importing"),
        ("Completed", "Completed"),
        ("ImportCompleted", "Completed"),
        ("Failed", "Failed"),
        ("ImportFailed", "Failed"),
        ("ImportFailedAndCleaned", "Failed"),
        ("None", "Unknown"),
        ("completed", "Unknown"),
        ("", "Unknown"),
        (None, "Unknown"),
    ],
)
def test_canonical_state_mapping(raw, state):
    assert canonical_state(raw) == state


_TEXTS = st.one_of(
    st.none(),
    st.text(max_size=6),
    st.sampled_from(["Completed", " job-1 ", "", "\x00", "caf\u00e9", "\ud800"]),
    st.integers(-5, 105),
    st.booleans(),
    st.floats(allow_nan=False),
    st.lists(st.integers(), max_size=1),
)


@settings(deadline=None)  # timing is not what is tested; the machine may be busy
@given(
    st.dictionaries(
        st.sampled_from(
            ["jobId", "jobID", "taskID", "collectionName", "state", "progress", "reason"]
        ),
        _TEXTS,
    )
)
def test_the_short_way_through_a_record_makes_the_record_the_long_way_does(item):
    # Pages parse the usual shape of an item the short way (_usual_record) and everything
    # else the long way (_record): where the short way answers, the two must agree.
    short = _usual_record(item, NOW)
    assert short is None or short == _record(item, NOW)
    assert parse_list_data({"records": [item]}, NOW).records == [
        r for r in [_record(item, NOW)] if r is not None
    ]


def test_the_usual_shape_takes_the_short_way():
    item = {"jobId": "448761313698322011", "collectionName": "c", "state": "Pending", "progress": 0}
    assert _usual_record(item, NOW) == _record(item, NOW) != None  # noqa: E711
