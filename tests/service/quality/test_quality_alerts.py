"""Alert rules and dashboard: real ``promtool check rules`` / ``promtool test rules``, and every
metric they name exists on the service's (or the PACS gateway's) /metrics.

The rules are scoped to one release (namespace and scrape job, filled in by the chart): every
promtool test loads the rules of two releases side by side, as two PrometheusRules in one
Prometheus would be, and expects each alert for its own release only.

The promtool unit tests are generated here from small scenario descriptions (studies per hour and
their scores), because a histogram needs one cumulative series per bucket: writing those by hand
would hide the scenario in numbers. Each scenario says which alerts must fire and which must not.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_tools import (
    DASHBOARD,
    RELEASE_A,
    RELEASE_B,
    RULES,
    RUNBOOK,
    exposed_names,
    metric_names,
    require_binary,
    scoped_rules,
)

from service.observability.metrics import ServiceMetrics, start_metrics_server
from service.observability.quality_metrics import SCORE_BUCKETS
from service.pacs.metrics import PacsMetrics

MV = "1.0"
#: Metrics exported only on GPU replicas (NVML); the dashboard may name them.
GPU_ONLY = {"pulmoseg_gpu_memory_used_bytes", "pulmoseg_gpu_memory_total_bytes"}


def _selector(labels: dict[str, str], release: tuple[str, str]) -> str:
    """Label matchers of a series scraped from ``release`` (namespace, job)."""
    namespace, job = release
    return ",".join(f'{k}="{v}"' for k, v in {"namespace": namespace, "job": job, **labels}.items())


def _histogram(
    name: str, labels: dict[str, str], steps: list[list[float]], release=RELEASE_A
) -> list[dict]:
    """Cumulative series of a histogram; ``steps[i]`` are the scores observed in interval i."""
    out = []
    selector = _selector(labels, release)
    bounds = [*(str(b) for b in SCORE_BUCKETS), "+Inf"]
    for bound in bounds:
        limit = float("inf") if bound == "+Inf" else float(bound)
        total, values = 0, ["0"]
        for scores in steps:
            total += sum(1 for s in scores if s <= limit)
            values.append(str(total))
        out.append(
            {"series": f'{name}_bucket{{{selector},le="{bound}"}}', "values": " ".join(values)}
        )
    totals, sums = [0.0], [0.0]
    for scores in steps:
        totals.append(totals[-1] + len(scores))
        sums.append(sums[-1] + sum(scores))
    out.append({"series": f"{name}_count{{{selector}}}", "values": " ".join(map(str, totals))})
    out.append(
        {"series": f"{name}_sum{{{selector}}}", "values": " ".join(f"{v:.4f}" for v in sums)}
    )
    return out


def _counter(name: str, labels: dict[str, str], per_step: list[float], release=RELEASE_A) -> dict:
    selector = _selector(labels, release)
    values, total = ["0"], 0.0
    for n in per_step:
        total += n
        values.append(f"{total:g}")
    return {"series": f"{name}{{{selector}}}", "values": " ".join(values)}


def _rules(release=RELEASE_A) -> dict[str, dict]:
    groups = yaml.safe_load(scoped_rules(*release))["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def _alert(name: str, release=RELEASE_A, **labels: str) -> dict:
    """The alert of ``release`` as promtool must see it: labels plus rendered annotations."""
    rule = _rules(release)[name]
    labels = {"namespace": release[0], "job": release[1], **labels}
    annotations = {}
    for key, text in rule["annotations"].items():
        for label, value in labels.items():
            text = text.replace(f"{{{{ $labels.{label} }}}}", value)
        annotations[key] = text
    return {"exp_labels": {**labels, **rule["labels"]}, "exp_annotations": annotations}


def _scenarios() -> list[dict]:
    hours = 180  # 7.5 days at 1 h steps: a 7-day baseline plus 6 recent hours
    quiet = [[]] * 10
    reference_low = {
        "name": "reference VolDice median below threshold, lung fine, too few for consolidation",
        "interval": "1h",
        "input_series": [
            *_histogram(
                "pulmoseg_study_voldice",
                {"class": "ggo", "model_version": MV},
                [[0.5]] * 10 + quiet,
            ),
            *_histogram(
                "pulmoseg_study_voldice",
                {"class": "lung", "model_version": MV},
                [[0.97]] * 10 + quiet,
            ),
            *_histogram(
                "pulmoseg_study_voldice",
                {"class": "consolidation", "model_version": MV},
                [[0.3]] * 3 + quiet,
            ),
        ],
        "alert_rule_test": [
            {
                "eval_time": "12h",
                "alertname": "PulmosegReferenceVolDiceLow",
                "exp_alerts": [
                    _alert("PulmosegReferenceVolDiceLow", **{"class": "ggo", "model_version": MV})
                ],
            },
        ],
    }
    baseline, recent = hours - 6, 6
    consistency_drop = {
        "name": "consistency VolDice of ggo drops 0.15 below its baseline, lung stays",
        "interval": "1h",
        "input_series": [
            *_histogram(
                "pulmoseg_consistency_voldice",
                {"class": "ggo", "model_version": MV},
                [[0.95, 0.95]] * baseline + [[0.8, 0.8]] * recent,
            ),
            *_histogram(
                "pulmoseg_consistency_voldice",
                {"class": "lung", "model_version": MV},
                [[0.98, 0.98]] * hours,
            ),
        ],
        "alert_rule_test": [
            {
                "eval_time": f"{hours - 7}h",
                "alertname": "PulmosegConsistencyDrop",
                "exp_alerts": [],
            },
            {
                "eval_time": f"{hours}h",
                "alertname": "PulmosegConsistencyDrop",
                "exp_alerts": [
                    _alert("PulmosegConsistencyDrop", **{"class": "ggo", "model_version": MV})
                ],
            },
        ],
    }
    flagged = {
        "name": "flagged share jumps from 5 % to 50 %",
        "interval": "1h",
        "input_series": [
            _counter("pulmoseg_consistency_checks_total", {"model_version": MV}, [2] * hours),
            _counter(
                "pulmoseg_flagged_studies_total",
                {"model_version": MV},
                [0.1] * baseline + [1] * recent,
            ),
            _counter("pulmoseg_consistency_checks_total", {"model_version": "0.9"}, [2] * hours),
            _counter("pulmoseg_flagged_studies_total", {"model_version": "0.9"}, [0.1] * hours),
            # The other release runs the same model version, steady: not mixed in, not alerted.
            _counter(
                "pulmoseg_consistency_checks_total", {"model_version": MV}, [20] * hours, RELEASE_B
            ),
            _counter(
                "pulmoseg_flagged_studies_total", {"model_version": MV}, [1] * hours, RELEASE_B
            ),
        ],
        "alert_rule_test": [
            {
                "eval_time": f"{hours}h",
                "alertname": "PulmosegFlaggedStudiesRising",
                "exp_alerts": [_alert("PulmosegFlaggedStudiesRising", model_version=MV)],
            },
        ],
    }
    errors = {
        "name": "internal errors above 5 % in one release, hidden in the pooled ratio",
        "interval": "1m",
        "input_series": [
            _counter(
                "pulmoseg_requests_total", {"method": "SegmentStudy", "code": "OK"}, [10] * 40
            ),
            _counter(
                "pulmoseg_requests_total",
                {"method": "SegmentStudy", "code": "INVALID_ARGUMENT"},
                [10] * 40,
            ),
            _counter(
                "pulmoseg_requests_total",
                {"method": "SegmentStudy", "code": "INTERNAL"},
                [0] * 15 + [2] * 25,
            ),
            # A busy healthy release: pooled, the errors are under 2 % and nothing would fire.
            _counter(
                "pulmoseg_requests_total",
                {"method": "SegmentStudy", "code": "OK"},
                [200] * 40,
                RELEASE_B,
            ),
        ],
        "alert_rule_test": [
            {"eval_time": "14m", "alertname": "PulmosegErrorRatioHigh", "exp_alerts": []},
            {
                "eval_time": "39m",
                "alertname": "PulmosegErrorRatioHigh",
                "exp_alerts": [_alert("PulmosegErrorRatioHigh")],
            },
        ],
    }
    a_loaded = f"pulmoseg_model_loaded{{{_selector({'instance': 'a'}, RELEASE_A)}}}"
    b_loaded = f"pulmoseg_model_loaded{{{_selector({'instance': 'b'}, RELEASE_B)}}}"
    serving = {
        "name": "the only replica of one release loses its model",
        "interval": "1m",
        "input_series": [
            {"series": a_loaded, "values": "1x10 0x20"},
            {"series": b_loaded, "values": "1x30"},
        ],
        "alert_rule_test": [
            {"eval_time": "9m", "alertname": "PulmosegNoServingReplica", "exp_alerts": []},
            {
                "eval_time": "20m",
                "alertname": "PulmosegNoServingReplica",
                "exp_alerts": [_alert("PulmosegNoServingReplica")],
            },
        ],
    }
    # Release A's pods are gone (no series at all) while release B serves: absent() per job
    # fires for A; an unscoped absent(pulmoseg_model_loaded == 1) would stay silent.
    vanished = {
        "name": "one release's replicas vanish while the other serves",
        "interval": "1m",
        "input_series": [
            {"series": a_loaded, "values": "1x10 _x20"},
            {"series": b_loaded, "values": "1x30"},
        ],
        "alert_rule_test": [
            {"eval_time": "9m", "alertname": "PulmosegNoServingReplica", "exp_alerts": []},
            {
                "eval_time": "25m",
                "alertname": "PulmosegNoServingReplica",
                "exp_alerts": [_alert("PulmosegNoServingReplica")],
            },
        ],
    }
    quality_score = {
        "name": "quality-score flags jump from 5 % to 50 % for one model only",
        "interval": "1h",
        "input_series": [
            *_histogram(
                "pulmoseg_quality_score",
                {"model_version": MV, "variant": "with_tta"},
                [[0.9, 0.9]] * hours,
            ),
            _counter(
                "pulmoseg_review_flagged_studies_total",
                {"reason": "quality_score", "model_version": MV},
                [0.1] * baseline + [1] * recent,
            ),
            *_histogram(
                "pulmoseg_quality_score",
                {"model_version": "0.9", "variant": "with_tta"},
                [[0.9, 0.9]] * hours,
            ),
            _counter(
                "pulmoseg_review_flagged_studies_total",
                {"reason": "quality_score", "model_version": "0.9"},
                [0.1] * hours,
            ),
        ],
        "alert_rule_test": [
            {
                "eval_time": f"{hours - 7}h",
                "alertname": "PulmosegQualityScoreFlagsRising",
                "exp_alerts": [],
            },
            {
                "eval_time": f"{hours}h",
                "alertname": "PulmosegQualityScoreFlagsRising",
                "exp_alerts": [_alert("PulmosegQualityScoreFlagsRising", model_version=MV)],
            },
        ],
    }
    return [
        reference_low,
        consistency_drop,
        flagged,
        errors,
        serving,
        vanished,
        _not_applicable(),
        quality_score,
        *_records_and_pacs(),
    ]


def _records_and_pacs() -> list[dict]:
    """Lost quality records, and the PACS gateway's spool, deliveries and dead letters."""
    gib = 2**30
    a_spool = {"instance": "a:9091"}
    b_spool = {"instance": "b:9091"}
    records = {
        "name": "quality records fail to be written in one release",
        "interval": "1m",
        "input_series": [
            _counter(
                "pulmoseg_errors_total",
                {"method": "RecordQuality", "reason": "internal"},
                [0] * 10 + [1] * 20,
            ),
            _counter(
                "pulmoseg_errors_total",
                {"method": "SegmentStudy", "reason": "x"},
                [1] * 30,
                RELEASE_B,
            ),
        ],
        "alert_rule_test": [
            {"eval_time": "9m", "alertname": "PulmosegRecordsNotWritten", "exp_alerts": []},
            {
                "eval_time": "20m",
                "alertname": "PulmosegRecordsNotWritten",
                "exp_alerts": [_alert("PulmosegRecordsNotWritten")],
            },
        ],
    }
    spool = {
        "name": "one release's spool passes 80 % of its limit; the other's stays low",
        "interval": "1m",
        "input_series": [
            {
                "series": f"pulmoseg_pacs_spool_capacity_bytes{{{_selector(a_spool, RELEASE_A)}}}",
                "values": f"{20 * gib}x40",
            },
            {
                "series": f"pulmoseg_pacs_spool_bytes{{{_selector(a_spool, RELEASE_A)}}}",
                "values": f"{gib}x10 {17 * gib}x30",
            },
            {
                "series": f"pulmoseg_pacs_spool_capacity_bytes{{{_selector(b_spool, RELEASE_B)}}}",
                "values": f"{20 * gib}x40",
            },
            {
                "series": f"pulmoseg_pacs_spool_bytes{{{_selector(b_spool, RELEASE_B)}}}",
                "values": f"{gib}x40",
            },
        ],
        "alert_rule_test": [
            {"eval_time": "15m", "alertname": "PulmosegPacsSpoolFilling", "exp_alerts": []},
            {
                "eval_time": "30m",
                "alertname": "PulmosegPacsSpoolFilling",
                "exp_alerts": [_alert("PulmosegPacsSpoolFilling", instance="a:9091")],
            },
        ],
    }
    sends = {
        "name": "deliveries to one destination fail after their retries; dead letters follow",
        "interval": "1m",
        "input_series": [
            _counter(
                "pulmoseg_pacs_sends_total",
                {"destination": "orthanc", "result": "success"},
                [1] * 40,
            ),
            _counter(
                "pulmoseg_pacs_sends_total",
                {"destination": "viewer", "result": "failed"},
                [0] * 20 + [1] * 20,
            ),
            _counter(
                "pulmoseg_pacs_studies_completed_total",
                {"outcome": "dead_letter"},
                [0] * 20 + [1] + [0] * 19,
            ),
            _counter(
                "pulmoseg_pacs_sends_total",
                {"destination": "viewer", "result": "failed"},
                [0] * 40,
                RELEASE_B,
            ),
        ],
        "alert_rule_test": [
            {"eval_time": "19m", "alertname": "PulmosegPacsSendsFailing", "exp_alerts": []},
            {
                "eval_time": "30m",
                "alertname": "PulmosegPacsSendsFailing",
                "exp_alerts": [_alert("PulmosegPacsSendsFailing", destination="viewer")],
            },
            {"eval_time": "19m", "alertname": "PulmosegPacsDeadLetters", "exp_alerts": []},
            {
                "eval_time": "30m",
                "alertname": "PulmosegPacsDeadLetters",
                "exp_alerts": [_alert("PulmosegPacsDeadLetters")],
            },
        ],
    }
    return [records, spool, sends]


def _not_applicable() -> dict:
    """Applicability: one model's outside-range share jumps from 5 % to 50 % in the last 2 h;
    others stay (5 %), rise only 1.6-fold, or see one odd study after a clean week."""
    steps = 7 * 144 + 72  # 10-minute steps: 7.5 days, so the week before the hour is full
    recent = 12  # the last 2 hours
    base = steps - recent

    def series(version: str, checked: list[float], outside: list[float]) -> list[dict]:
        labels = {"model_version": version}
        return [
            _counter("pulmoseg_applicability_checks_total", labels, checked),
            _counter("pulmoseg_not_applicable_studies_total", labels, outside),
        ]

    per_step = [2.0] * steps  # 12 studies an hour
    return {
        "name": "outside-range share doubles for one model only",
        "interval": "10m",
        "input_series": [
            *series(MV, per_step, [0.1] * base + [1.0] * recent),
            *series("0.9", per_step, [0.1] * steps),
            *series("1.1", per_step, [0.1] * base + [0.16] * recent),
            *series("1.2", per_step, [0.0] * (steps - 3) + [1.0, 0.0, 0.0]),
        ],
        "alert_rule_test": [
            {
                "eval_time": f"{(base - 6) * 10}m",
                "alertname": "PulmosegNotApplicableShareDoubled",
                "exp_alerts": [],
            },
            {
                "eval_time": f"{steps * 10}m",
                "alertname": "PulmosegNotApplicableShareDoubled",
                "exp_alerts": [_alert("PulmosegNotApplicableShareDoubled", model_version=MV)],
            },
        ],
    }


def _promtool_test(tmp_path: Path, tests: list[dict]) -> subprocess.CompletedProcess:
    promtool = require_binary("promtool")
    rule_files = []
    for release in (RELEASE_A, RELEASE_B):  # two PrometheusRules in one Prometheus
        rules = tmp_path / f"rules-{release[0]}.yaml"
        rules.write_text(scoped_rules(*release))
        rule_files.append(str(rules))
    spec = {"rule_files": rule_files, "evaluation_interval": "5m", "tests": tests}
    path = tmp_path / "pulmoseg-alerts.test.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return subprocess.run(
        [promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=600
    )


def test_rules_pass_promtool_check():
    promtool = require_binary("promtool")
    done = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 18 rules found" in done.stdout


def test_alert_rule_unit_tests_pass(tmp_path):
    done = _promtool_test(tmp_path, _scenarios())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_a_wrong_expectation_fails_promtool(tmp_path):
    """The harness can fail: expecting the ggo alert for lung is reported by promtool."""
    scenario = _scenarios()[0]
    scenario["alert_rule_test"][0]["exp_alerts"] = [
        _alert("PulmosegReferenceVolDiceLow", **{"class": "lung", "model_version": MV})
    ]
    done = _promtool_test(tmp_path, [scenario])
    assert done.returncode != 0
    assert "PulmosegReferenceVolDiceLow" in done.stdout + done.stderr


def _expressions() -> list[tuple[str, str]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    out = [(r.get("alert") or r["record"], r["expr"]) for g in groups for r in g["rules"]]
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out.append((f"dashboard: {panel['title']}", target["expr"]))
    return out


def test_every_metric_named_by_rules_and_dashboard_exists_on_metrics():
    metrics = ServiceMetrics()
    server = start_metrics_server(metrics, "127.0.0.1", 0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as r:
            exposed = exposed_names(r.read().decode())
    finally:
        server.stop()
    exposed |= exposed_names(generate_latest(PacsMetrics().registry).decode())
    assert "process_resident_memory_bytes" in exposed
    missing = {
        (where, name)
        for where, expr in _expressions()
        for name in metric_names(expr)
        if name not in exposed and name not in GPU_ONLY
    }
    assert missing == set()
    named = {name for _, expr in _expressions() for name in metric_names(expr)}
    assert {"pulmoseg_study_voldice_bucket", "pulmoseg_consistency_voldice_sum"} <= named
    assert {
        "pulmoseg_applicability_checks_total",
        "pulmoseg_not_applicable_studies_total",
        "pulmoseg_not_applicable_reasons_total",
        "pulmoseg_quality_score_count",
        "pulmoseg_review_flagged_studies_total",
    } <= named


@pytest.mark.parametrize(
    "bad", ["pulmoseg_study_voldise_bucket", "pulmoseg_request_duration_seconds_total"]
)
def test_the_metric_check_catches_a_misspelled_name(bad):
    exposed = exposed_names(
        "# TYPE pulmoseg_study_voldice histogram\n"
        "# TYPE pulmoseg_request_duration_seconds histogram\n"
    )
    assert bad in metric_names(f"rate({bad}[5m])") and bad not in exposed


_SELECTOR = re.compile(r"\b((?:pulmoseg|process)_[a-z0-9_]+|pulmoseg:[a-z0-9_:]+)(\{[^}]*\})?")
_GROUPING = re.compile(r"\b(?:by|on)\s*\(([^)]*)\)")


def _unscoped(expression: str, namespace: str, job: str) -> list[str]:
    """Selectors without the release's namespace and job, and groupings that drop them."""
    problems = []
    for match in _SELECTOR.finditer(expression):
        if match.group(1).endswith("_"):
            continue
        matchers = match.group(2) or ""
        if f'namespace="{namespace}"' not in matchers or f'job="{job}"' not in matchers:
            problems.append(match.group(0))
    for match in _GROUPING.finditer(expression):
        labels = {label.strip() for label in match.group(1).split(",")}
        if not {"namespace", "job"} <= labels:
            problems.append(match.group(0))
    return problems


def test_every_rule_selects_and_groups_by_its_release():
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [r for g in groups for r in g["rules"]]
    problems = {
        (r.get("alert") or r["record"], p)
        for r in rules
        for p in _unscoped(r["expr"], "__NAMESPACE__", "__JOB__")
    }
    assert problems == set()
    # The check can fail: the unscoped absent() of the past is caught.
    assert _unscoped("absent(pulmoseg_model_loaded == 1)", "__NAMESPACE__", "__JOB__")
    assert _unscoped("sum by (model_version) (x)", "__NAMESPACE__", "__JOB__")


def test_every_dashboard_query_is_scoped_to_the_selected_release():
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"namespace", "job"} <= set(variables)
    problems = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            for match in _SELECTOR.finditer(target["expr"]):
                matchers = match.group(2) or ""
                if 'namespace="$namespace"' not in matchers or 'job="$job"' not in matchers:
                    problems.append((panel["title"], match.group(0)))
    assert problems == []
    titles = {p["title"] for p in dashboard["panels"]}
    assert "Studies in progress" in titles
    named = {name for _, expr in _expressions() for name in metric_names(expr)}
    assert {
        "pulmoseg_studies_in_progress",
        "pulmoseg_pacs_spool_bytes",
        "pulmoseg_pacs_sends_total",
        "pulmoseg_pacs_studies_completed_total",
    } <= named


def test_every_alert_links_its_own_runbook_section():
    runbook = (RULES.parents[3] / "docs" / "runbook.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in runbook.splitlines()
        if line.startswith("## ")
    }
    alerts = _rules()
    assert len(alerts) == 11
    for name, rule in alerts.items():
        assert rule["annotations"]["runbook_url"] == f"{RUNBOOK}#{name.lower()}", name
        assert name.lower() in anchors, f"docs/runbook.md has no section '## {name}'"
