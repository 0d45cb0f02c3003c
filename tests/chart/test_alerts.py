"""The PrometheusRule's alerts, checked and unit-tested with promtool on series that fire and that don't.

The rule groups are taken from the rendered PrometheusRule's spec, written as a rules file, checked
with `promtool check rules`, then run by `promtool test rules` over synthetic series: each alert
fires after its `for` duration (with the labels and annotations it should carry), and stays silent
before that, for the other status of its condition, and for another release's job.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import FULLNAME, OPERATOR_METRICS, TARGET_LABELS, Rendered

JOB = f"{FULLNAME}-metrics"
OTHER_JOB = "other-tokenscale-metrics"
RULE_VALUES: dict[str, Any] = {
    "prometheusRule": {
        "enabled": True,
        "objectiveViolatedFor": "10m",
        "metricsUnavailableFor": "5m",
        "scalingLimitedFor": "15m",
        "operatorDownFor": "3m",
        "alertLabels": {"team": "ml-platform"},
    }
}
POOL = {"namespace": "team-a", "pool": "llama-70b"}


def _rules(render: Callable[[dict[str, Any]], Rendered], values: dict[str, Any]) -> dict[str, Any]:
    rule = render(values).one("PrometheusRule")
    return {"groups": rule["spec"]["groups"]}


def _promtool(promtool: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(promtool), *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def _annotations(rules: dict[str, Any], alert: str, labels: dict[str, str]) -> dict[str, str]:
    """The alert's annotations with `{{ $labels.x }}` filled in, as Prometheus should expand them."""
    (rule,) = [r for g in rules["groups"] for r in g["rules"] if r.get("alert") == alert]
    out = {}
    for key, text in rule["annotations"].items():
        for name, value in labels.items():
            text = text.replace(f"{{{{ $labels.{name} }}}}", value)
        assert "{{" not in text, f"{alert}.{key} uses a template this test does not expand: {text}"
        out[key] = text
    return out


def _series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    rendered = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{rendered}}}", "values": values}


def _condition(job: str, type_: str, status: str, values: str, pool: dict[str, str] = POOL) -> dict[str, str]:
    return _series("tokenscale_condition", {"job": job, **pool, "type": type_, "status": status}, values)


# (alert, condition type, status that fires, the other status, `for` in minutes, severity)
CONDITION_ALERTS = [
    pytest.param(
        "TokenscaleObjectiveViolated", "ObjectivesMet", "False", "True", 10, "critical", id="objective-violated"
    ),
    pytest.param(
        "TokenscaleMetricsUnavailable", "MetricsAvailable", "False", "True", 5, "warning", id="metrics-unavailable"
    ),
    pytest.param("TokenscaleScalingLimited", "ScalingLimited", "True", "False", 15, "warning", id="scaling-limited"),
]


def _run_tests(promtool: Path, tmp_path: Path, rules: dict[str, Any], tests: list[dict[str, Any]]) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    (tmp_path / "tests.yaml").write_text(
        yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}, sort_keys=False)
    )
    result = _promtool(promtool, "test", "rules", "tests.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout, result.stdout


def test_rules_pass_promtool_check(
    render: Callable[[dict[str, Any]], Rendered], promtool: Path, tmp_path: Path
) -> None:
    rules = _rules(render, RULE_VALUES)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    result = _promtool(promtool, "check", "rules", "rules.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 4 rules found" in result.stdout, result.stdout
    alerts = [r["alert"] for g in rules["groups"] for r in g["rules"]]
    assert alerts == [
        "TokenscaleObjectiveViolated",
        "TokenscaleMetricsUnavailable",
        "TokenscaleScalingLimited",
        "TokenscaleOperatorDown",
    ]


@pytest.mark.parametrize(("alert", "type_", "firing", "other", "for_min", "severity"), CONDITION_ALERTS)
def test_condition_alert_fires_after_its_duration_and_only_then(
    render: Callable[[dict[str, Any]], Rendered],
    promtool: Path,
    tmp_path: Path,
    alert: str,
    type_: str,
    firing: str,
    other: str,
    for_min: int,
    severity: str,
) -> None:
    rules = _rules(render, RULE_VALUES)
    labels = {"job": JOB, **POOL, "type": type_, "status": firing}
    quiet_pool = {"namespace": "team-a", "pool": "healthy"}
    flapping_pool = {"namespace": "team-b", "pool": "flapping"}
    # 1 means "the condition has this status now" (the operator exports 1 for the current status).
    half = for_min // 2
    flapping = f"1x{half} 0x1 1x{half} 0x1 1x{half}"
    tests = [
        {
            "interval": "1m",
            "input_series": [
                _condition(JOB, type_, firing, f"0x2 1x{for_min + 10}"),
                _condition(JOB, type_, other, f"1x2 0x{for_min + 10}"),
                # Another pool whose condition has the good status the whole time: silent.
                _condition(JOB, type_, other, f"1x{for_min + 12}", quiet_pool),
                _condition(JOB, type_, firing, f"0x{for_min + 12}", quiet_pool),
                # A pool that recovers before `for` elapses, again and again: silent.
                _condition(JOB, type_, firing, flapping, flapping_pool),
                # Another release's operator (another job): not this release's alert.
                _condition(OTHER_JOB, type_, firing, f"1x{for_min + 12}", {"namespace": "x", "pool": "y"}),
            ],
            "alert_rule_test": [
                # Bad since minute 2: pending until 2 + for.
                {"eval_time": f"{for_min + 1}m", "alertname": alert, "exp_alerts": []},
                {
                    "eval_time": f"{for_min + 3}m",
                    "alertname": alert,
                    "exp_alerts": [
                        {
                            "exp_labels": {**labels, "severity": severity, "team": "ml-platform"},
                            "exp_annotations": _annotations(rules, alert, labels),
                        }
                    ],
                },
            ],
        }
    ]
    _run_tests(promtool, tmp_path, rules, tests)


def test_operator_down_fires_when_unscraped_or_down(
    render: Callable[[dict[str, Any]], Rendered], promtool: Path, tmp_path: Path
) -> None:
    rules = _rules(render, RULE_VALUES)
    instance = "10.0.0.7:9090"
    alert = "TokenscaleOperatorDown"
    extra = {"severity": "critical", "team": "ml-platform"}
    down_labels = {"job": JOB, "instance": instance}
    tests = [
        {  # Scraped and up: silent; another release's operator being down is not this alert.
            "interval": "1m",
            "input_series": [
                _series("up", down_labels, "1x20"),
                _series("up", {"job": OTHER_JOB, "instance": "10.0.0.8:9090"}, "0x20"),
            ],
            "alert_rule_test": [{"eval_time": "15m", "alertname": alert, "exp_alerts": []}],
        },
        {  # Scrapes fail from minute 5: pending for 3m, then firing with the target's labels.
            "interval": "1m",
            "input_series": [_series("up", down_labels, "1x4 0x20")],
            "alert_rule_test": [
                {"eval_time": "7m", "alertname": alert, "exp_alerts": []},
                {
                    "eval_time": "9m",
                    "alertname": alert,
                    "exp_alerts": [
                        {"exp_labels": {**down_labels, **extra}, "exp_annotations": _annotations(rules, alert, {})}
                    ],
                },
            ],
        },
        {  # No scrape of this job at all (no ServiceMonitor, wrong labels): absent() fires.
            "interval": "1m",
            "input_series": [_series("up", {"job": OTHER_JOB, "instance": "10.0.0.8:9090"}, "1x20")],
            "alert_rule_test": [
                {"eval_time": "2m", "alertname": alert, "exp_alerts": []},
                {
                    "eval_time": "5m",
                    "alertname": alert,
                    "exp_alerts": [
                        {"exp_labels": {"job": JOB, **extra}, "exp_annotations": _annotations(rules, alert, {})}
                    ],
                },
            ],
        },
    ]
    _run_tests(promtool, tmp_path, rules, tests)


@pytest.mark.parametrize(
    ("values", "job", "durations"),
    [
        pytest.param({"prometheusRule": {"enabled": True}}, JOB, ["10m", "10m", "15m", "5m"], id="defaults"),
        pytest.param(
            {"prometheusRule": {"enabled": True, "job": "kube-system/tokenscale", "objectiveViolatedFor": "30m"}},
            "kube-system/tokenscale",
            ["30m", "10m", "15m", "5m"],
            id="job-and-duration-set",
        ),
    ],
)
def test_alert_job_and_durations_follow_values(
    render: Callable[[dict[str, Any]], Rendered], values: dict[str, Any], job: str, durations: list[str]
) -> None:
    rules = _rules(render, values)["groups"][0]["rules"]
    assert [r["for"] for r in rules] == durations
    for rule in rules:
        assert f'job="{job}"' in rule["expr"], rule["alert"]
    assert rules[-1]["expr"] == f'up{{job="{job}"}} == 0 or absent(up{{job="{job}"}})'


def test_alerts_read_only_the_operators_metrics_and_labels(render: Callable[[dict[str, Any]], Rendered]) -> None:
    for rule in _rules(render, RULE_VALUES)["groups"][0]["rules"]:
        for name, matchers in re.findall(r"\b([a-z_]+)\{([^}]*)\}", rule["expr"]):
            allowed = TARGET_LABELS if name == "up" else OPERATOR_METRICS[name] | TARGET_LABELS
            used = {m.split("=")[0].strip() for m in matchers.split(",")}
            assert used <= allowed, f"{rule['alert']}: {name} has no label {used - allowed}"
