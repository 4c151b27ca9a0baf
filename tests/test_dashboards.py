"""The Grafana dashboards against a real Prometheus (Debian package `prometheus`) scraping real runs.

Every PromQL query of every dashboard (panels and variables) is sent to Prometheus with Grafana's variables
filled in: Prometheus must accept each one, and the Training dashboard's queries must find the runs. The
Runs table must tell a live run (running), a finished one (finished) and one killed with SIGKILL (stopped,
once its heartbeat is older than the dashboard's `stale_after`).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from lezea_otel.testing import Capture

from .test_prometheus_e2e import PROMETHEUS, free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "grafana" / "dashboards"
STALE_AFTER_S = 4

KILLED_RUN = """
import sys, time
from lezea_otel import ExperimentTracker
tracker = ExperimentTracker("killed", runs_dir=sys.argv[2], quiet=True)
tracker.start(prometheus_port=int(sys.argv[1]))
with tracker.builder_scope("0"):
    for step in range(1, 4):
        with tracker.span("forward"):
            tracker.log_training_step(step, {"loss": 1.0 / step}, data_split="train")
print(tracker.experiment_id, flush=True)
time.sleep(300)
"""


def promql(base: str, expr: str) -> dict:
    """The answer of an instant query, errors included (HTTP 400/422 carry the parser's message)."""
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        return json.loads(urllib.request.urlopen(url, timeout=10).read())
    except urllib.error.HTTPError as error:
        return json.loads(error.read() or b"{}") | {"http": error.code}


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's variable interpolation for the names this suite uses ($x and ${x} forms)."""
    def one(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise AssertionError(f"no test value for ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", one, expr)


def panels(items: list[dict]):
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def prometheus_queries(board: dict) -> list[tuple[str, str]]:
    """(where, PromQL) for every Prometheus query of a dashboard: panel targets and query variables."""
    found = []
    for panel in panels(board["panels"]):
        for target in panel.get("targets", []):
            datasource = target.get("datasource") or panel.get("datasource") or {}
            if datasource.get("uid") == "prometheus":
                found.append((f"{board['uid']}: {panel['title']} {target['refId']}", target["expr"]))
    for variable in board["templating"]["list"]:
        if variable.get("type") == "query" and variable["datasource"]["uid"] == "prometheus":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
            found.append((f"{board['uid']}: variable {variable['name']}", match.group(1) if match else query))
    return found


def status_texts(board: dict) -> dict[str, str]:
    """The Runs table's value mapping: status code -> text shown."""
    (table,) = [p for p in panels(board["panels"]) if p["title"] == "Runs" and p["type"] == "table"]
    (override,) = [o for o in table["fieldConfig"]["overrides"] if o["matcher"]["options"] == "Status"]
    (mappings,) = [p["value"] for p in override["properties"] if p["id"] == "mappings"]
    return {key: option["text"] for key, option in mappings[0]["options"].items()}


@pytest.fixture
def prometheus_for(tmp_path):
    processes: list[subprocess.Popen[bytes]] = []

    def start(target_ports: list[int]) -> str:
        port = free_port()
        targets = ", ".join(f"'127.0.0.1:{p}'" for p in target_ports)
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s, scrape_timeout: 1s}\n"
            f"scrape_configs:\n  - job_name: lezea\n    static_configs: [{{targets: [{targets}]}}]\n")
        processes.append(subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return f"http://127.0.0.1:{port}"

    yield start
    for process in processes:
        process.terminate()
        process.wait(20)


@pytest.fixture
def killed_run(tmp_path):
    """A tracker in a child process, to be killed with SIGKILL."""
    children: list[subprocess.Popen[str]] = []

    def start(port: int) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LEZEA_RAISE"))}
        children.append(subprocess.Popen(
            [sys.executable, "-c", KILLED_RUN, str(port), str(tmp_path / "killed-runs")], cwd=tmp_path,
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
        return children[-1]

    yield start
    for child in children:
        if child.poll() is None:
            child.kill()
        child.wait(10)
        child.stdout.close()


def test_dashboards_against_real_runs(capture, tmp_path, prometheus_for, killed_run):
    boards = {path.stem: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}
    live_port, finished_port, killed_port = free_port(), free_port(), free_port()
    base = prometheus_for([live_port, finished_port, killed_port])
    child = killed_run(killed_port)

    live = capture.tracker("live")
    live.start(prometheus_port=live_port)
    finished = Capture(tmp_path / "runs-finished").tracker("done")
    finished.start(prometheus_port=finished_port)
    for tracker in (live, finished):
        with tracker.builder_scope("0"):
            for step in range(1, 6):
                with tracker.span("forward"):
                    tracker.log_training_step(step, {"loss": 1.0 / step, "acc": step / 10},
                                              data_split="train")
    live.log_training_step(6, {"loss": float("nan")})  # feeds the non-finite panel
    killed_id = child.stdout.readline().strip()
    assert killed_id, "the child tracker did not start"
    ids = {"live": live.experiment_id, "finished": finished.experiment_id, "killed": killed_id}

    values = {"experiment": "|".join(ids.values()), "experiment_name": ".+", "__range": "10m",
              "__rate_interval": "1m", "__interval": "15s", "stale_after": str(STALE_AFTER_S),
              "value": "lezea_training_loss", "phase": ".+"}
    training = boards["training"]
    (runs_table,) = [p for p in panels(training["panels"]) if p["title"] == "Runs" and p["type"] == "table"]
    runs_query = substitute(runs_table["targets"][0]["expr"], values)
    texts = status_texts(training)

    def statuses() -> dict[str, str]:
        answer = promql(base, runs_query)
        assert answer["status"] == "success", answer
        shown = {r["metric"]["lezea_experiment_id"]: texts[r["value"][1]] for r in answer["data"]["result"]}
        return {name: shown.get(run_id, "absent") for name, run_id in ids.items()}

    # Two scrapes of every run, so rate()/deriv() have samples to work on.
    for run_id in ids.values():
        wait_for(base,
                 f'count_over_time(lezea_run_heartbeat_seconds{{lezea_experiment_id="{run_id}"}}[1m]) >= 2',
                 timeout_s=30)
    assert statuses() == {"live": "running", "finished": "running", "killed": "running"}

    os.kill(child.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    child.wait(10)
    assert statuses()["killed"] == "running"  # a heartbeat younger than stale_after: not yet stopped

    # finalize waits (bounded) for one more scrape, so Prometheus sees the final status.
    finished.finalize_experiment()
    assert promql(base, f'lezea_run_state{{lezea_experiment_id="{ids["finished"]}", '
                        f'lezea_run_status="finished"}} == 1')["data"]["result"]

    # (a) Every Prometheus query of every dashboard is valid PromQL once the variables are filled in.
    for board in boards.values():
        for where, expr in prometheus_queries(board):
            answer = promql(base, substitute(expr, values))
            assert answer.get("status") == "success", (where, expr, answer)
    # ... and the Training dashboard's queries find the runs.
    empty = [(where, expr) for where, expr in prometheus_queries(training)
             if not promql(base, substitute(expr, values))["data"]["result"]]
    assert empty == []

    # (b) The killed run turns "stopped" once its heartbeat is older than stale_after; the others keep theirs.
    deadline = time.monotonic() + 20
    while (shown := statuses())["killed"] != "stopped" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert shown == {"live": "running", "finished": "finished", "killed": "stopped"}
    assert time.monotonic() - killed_at >= STALE_AFTER_S - 1.5  # not stopped before the threshold
    # Its series went stale on the failed scrapes, yet the table still lists it with its last step.
    stale = promql(base, f'lezea_run_heartbeat_seconds{{lezea_experiment_id="{killed_id}"}}')
    assert stale["data"]["result"] == []
    (step_query,) = [t["expr"] for t in runs_table["targets"] if t["refId"] == "B"]
    steps = {r["metric"]["lezea_experiment_id"]: r["value"][1]
             for r in promql(base, substitute(step_query, values))["data"]["result"]}
    assert steps == {ids["live"]: "6", ids["finished"]: "5", killed_id: "3"}
    live.finalize_experiment()
