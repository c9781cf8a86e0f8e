"""deploy/prometheus: the rules pass promtool's check and their unit tests, every alert has a
test, and every metric they name is one the daemon exports."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import DEPLOY
from tests.deploy.promql import metric_names

PROMETHEUS = DEPLOY / "prometheus"
RULES = PROMETHEUS / "jobsync-rules.yml"
RULE_TESTS = PROMETHEUS / "jobsync-rules.test.yml"
EXAMPLE_CONFIG = PROMETHEUS / "prometheus.example.yml"
REQUIRE_PROMTOOL = os.environ.get("JOBSYNC_TEST_REQUIRE_PROMTOOL") == "1"

# Series that Prometheus makes itself, for every target it scrapes.
PROMETHEUS_OWN = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})


@pytest.fixture
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool is not on PATH (Debian: apt-get install prometheus)"
        if REQUIRE_PROMTOOL:
            pytest.fail(message + " [required: JOBSYNC_TEST_REQUIRE_PROMTOOL=1]")
        pytest.skip(message)
    return found


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=120, check=False
    )


def _rules() -> list[dict]:
    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"]]


def test_the_rules_pass_promtool_check_rules(promtool):
    result = _run(promtool, "check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_the_rules_pass_their_unit_tests(promtool):
    result = _run(promtool, "test", "rules", RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_example_configuration_passes_promtool_check_config(promtool):
    result = _run(promtool, "check", "config", EXAMPLE_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_metric_the_rules_name_is_one_the_daemon_exports(exported_metrics):
    rules = _rules()
    recorded = {rule["record"] for rule in rules if "record" in rule}
    unknown = {}
    for rule in rules:
        names = metric_names(rule["expr"])
        assert names, f"no metric found in {rule.get('alert') or rule.get('record')}"
        missing = names - exported_metrics - recorded - PROMETHEUS_OWN
        if missing:
            unknown[rule.get("alert") or rule.get("record")] = sorted(missing)
    assert not unknown, f"metrics the daemon does not export: {unknown}"


def test_every_alert_has_a_unit_test_that_fires_it_and_says_what_to_do():
    alerts = {rule["alert"]: rule for rule in _rules() if "alert" in rule}
    tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert set(alerts) <= fired, f"alerts no test fires: {sorted(set(alerts) - fired)}"
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            "time() - jobsync_last_success_timestamp_seconds > 900",
            {"jobsync_last_success_timestamp_seconds"},
        ),
        (
            'histogram_quantile(0.95, sum without (status) (rate(a_bucket{le="+Inf", x=~"a|b"}[1h])))',
            {"a_bucket"},
        ),
        ("(a - a offset 15m) > 0 unless on (job, instance) b:rec > 1e3", {"a", "b:rec"}),
        ('increase(c_total{kind="AuthError"}[$__rate_interval]) * 3600', {"c_total"}),
    ],
)
def test_metric_names_reads_what_an_expression_selects(expr, names):
    assert metric_names(expr) == names
