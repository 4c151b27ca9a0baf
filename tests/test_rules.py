"""The alerting and recording rules (``collector/rules/``, made by ``lezea_otel.mixin.rules``): the committed
file is what the code writes, ``promtool`` accepts it, and its unit tests (``tests/rules/``) pass: every
alert fires on series that should fire it and stays silent on those that fool naive rules."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lezea_otel.mixin.rules import THRESHOLDS, rules

from .stack import COLLECTOR_DIR, ROOT, binaries

RULE_FILES = sorted((COLLECTOR_DIR / "rules").glob("*.yaml"))
UNIT_TESTS = sorted((ROOT / "tests" / "rules").glob("*.test.yaml"))


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """promtool of the Prometheus release the suite runs (built beside it by scripts/stack-bin.sh)."""
    tool = Path(binaries()[1]).with_name(Path(binaries()[1]).name.replace("prometheus", "promtool"))
    return subprocess.run([str(tool), *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def alerts(groups: dict) -> list[dict]:
    return [rule for group in groups["groups"] for rule in group["rules"] if "alert" in rule]


def test_the_committed_rules_are_what_the_code_writes(tmp_path):
    checked = subprocess.run([sys.executable, "scripts/rules.py", "--check"], cwd=ROOT, capture_output=True,
                             text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    changed = tmp_path / "changed.yaml"
    changed.write_text(RULE_FILES[0].read_text().replace("> 600", "> 601"))
    checked = subprocess.run([sys.executable, "scripts/rules.py", "--check", "-o", str(changed)], cwd=ROOT,
                             capture_output=True, text=True)
    assert checked.returncode == 1 and "differs from the code" in checked.stdout


def test_promtool_accepts_every_rule_file_and_refuses_a_broken_one(tmp_path):
    assert RULE_FILES
    for path in RULE_FILES:
        checked = promtool("check", "rules", str(path))
        assert checked.returncode == 0 and "SUCCESS" in checked.stdout, checked.stdout + checked.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text(RULE_FILES[0].read_text().replace("max_over_time(", "max_over_time((", 1))
    assert promtool("check", "rules", str(broken)).returncode != 0


def test_every_alert_fires_in_a_unit_test_and_every_unit_test_passes():
    tested = {case["alertname"] for path in UNIT_TESTS for test in yaml.safe_load(path.read_text())["tests"]
              for case in test.get("alert_rule_test", []) if case.get("exp_alerts")}
    assert tested == {rule["alert"] for rule in alerts(rules())}
    for path in UNIT_TESTS:
        answer = promtool("test", "rules", path.name, cwd=path.parent)
        assert answer.returncode == 0, answer.stdout + answer.stderr


def test_every_alert_follows_the_mixin_conventions_and_has_a_runbook():
    readme = (ROOT / "README.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")
               for heading in re.findall(r"^#+ (.+)$", readme, flags=re.MULTILINE)}
    for rule in alerts(rules()):
        name = rule["alert"]
        assert re.fullmatch(r"Lezea(?:[A-Z][a-z0-9]*)+", name), name
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook"} <= set(annotations), name
        if "lezea_experiment_id" in rule["expr"] and "otelcol" not in rule["expr"]:
            assert "lezea_experiment_name" in annotations["summary"], name  # which run, and which rank
            assert "dl_rank" in annotations["summary"], name
        anchor = annotations["runbook"].removeprefix("README.md#")
        assert anchor in anchors, f"README has no runbook entry for {name} (#{anchor})"


def test_thresholds_are_changed_in_one_place():
    stalled = next(rule for rule in alerts(rules({"stalled_after": "30m", "stalled_for": "5m"}))
                   if rule["alert"] == "LezeaRunStalled")
    assert "> 1800)" in stalled["expr"] and stalled["for"] == "5m"
    assert all("interval" not in group for group in rules()["groups"])
    assert all(group["interval"] == "2s" for group in rules({"interval": "2s"})["groups"])
    with pytest.raises(ValueError, match="unknown thresholds"):
        rules({"stalled_afterr": "30m"})
    with pytest.raises(ValueError, match="not a Prometheus duration"):
        rules({"dead_after": "two minutes"})
    assert all(threshold.why for threshold in THRESHOLDS.values())
    listed = subprocess.run([sys.executable, "scripts/rules.py", "--list"], cwd=ROOT, capture_output=True,
                            text=True)
    assert listed.returncode == 0 and all(f"{name} = " in listed.stdout for name in THRESHOLDS)
