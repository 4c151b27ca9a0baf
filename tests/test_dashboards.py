"""The Grafana dashboards against a real Prometheus 3 (the shipped flags and config) scraping real runs.

Every PromQL query of every dashboard (panels and variables) is sent to Prometheus with Grafana's variables
filled in: Prometheus must accept each one, and the Training dashboard's queries must find the runs. The
Runs table must tell a live run (running), a finished one (finished) and one killed with SIGKILL (stopped,
once its heartbeat is older than the dashboard's `stale_after`). Four ranks of one launch, each serving its
own /metrics port, one of them slower: the rank variable lists them, the rank-filtered queries are valid for
any selection, the straggler panels name the slow rank, and a SIGKILLed rank is stopped in the Ranks table
while the run goes on.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lezea_otel.mixin.rules import PHASE_P95, STEP_RATE
from lezea_otel.testing import Capture

from .stack import Prometheus, free_port

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


RANK = """
import json, os, sys, threading, time
from lezea_otel import ExperimentTracker
tracker = ExperimentTracker("ranks", runs_dir=sys.argv[1]).start(prometheus_port=int(sys.argv[2]))
start = next(r for r in map(json.loads, tracker.audit_path.read_text().splitlines())
             if r["kind"] == "experiment_start")
print(tracker.experiment_id, start["data"]["prometheus_port"], flush=True)
work_s = float(os.environ["PHASE_WORK_S"])
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
step = 0
while not stop.is_set():  # until the test closes stdin
    step += 1
    with tracker.span("forward"):
        time.sleep(work_s)  # the measured work of a step: the slow rank's is longer (no synchronisation)
    tracker.log_training_step(step, {"loss": 1.0 / step})
tracker.finalize_experiment()
"""
SLOW_RANK = 2


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


def panel(board: dict, title: str) -> dict:
    (found,) = [p for p in panels(board["panels"]) if p["title"] == title and p["type"] != "row"]
    return found


def rank_variable(board: dict) -> str:
    (variable,) = [v for v in board["templating"]["list"] if v["name"] == "rank"]
    assert variable["multi"] and variable["includeAll"] and variable["allValue"] == ".*"
    return variable["query"]["query"]


def label_values(server: Prometheus, query: str, values: dict[str, str]) -> list[str]:
    """What Grafana offers for a ``label_values(selector, label)`` variable: Prometheus' label values API."""
    selector, label = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query).groups()
    return server.label_values(label, substitute(selector, values))


def status_texts(board: dict, title: str = "Runs") -> dict[str, str]:
    """A status table's value mapping (Runs, Ranks): status code -> text shown."""
    (table,) = [p for p in panels(board["panels"]) if p["title"] == title and p["type"] == "table"]
    (override,) = [o for o in table["fieldConfig"]["overrides"] if o["matcher"]["options"] == "Status"]
    (mappings,) = [p["value"] for p in override["properties"] if p["id"] == "mappings"]
    return {key: option["text"] for key, option in mappings[0]["options"].items()}


@pytest.fixture
def prometheus_for(prometheus):
    """Prometheus scraping a list of ports."""
    return lambda target_ports: prometheus(*target_ports)


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
    stop(children)


def stop(children: list[subprocess.Popen[str]]) -> None:
    """Kill what is still running and close the pipes (a fixture's teardown)."""
    for child in children:
        if child.poll() is None:
            child.kill()
        child.wait(10)
        for pipe in (child.stdout, child.stdin):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def ranks(tmp_path):
    """Four ranks of one torchrun-like launch, each its own process serving /metrics on base + LOCAL_RANK;
    rank SLOW_RANK's phase takes longer. Yields a starter that returns (processes, experiment ids, ports)."""
    children: list[subprocess.Popen[str]] = []

    def start(base_port: int) -> tuple[list[subprocess.Popen[str]], set[str], list[int]]:
        for rank in range(4):
            env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
            env.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "4",
                        "LOCAL_WORLD_SIZE": "4", "GROUP_RANK": "0",
                        "TORCHELASTIC_RUN_ID": f"dashboards-{tmp_path.name}",
                        "LEZEA_AUDIT_FSYNC": "always", "LEZEA_QUIET": "1",
                        "PHASE_WORK_S": "0.6" if rank == SLOW_RANK else "0.05"})
            children.append(subprocess.Popen(
                [sys.executable, "-c", RANK, str(tmp_path / "rank-runs"), str(base_port)], cwd=tmp_path,
                env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        started = [child.stdout.readline().split() for child in children]
        assert all(len(line) == 2 for line in started), started
        return children, {line[0] for line in started}, [int(line[1]) for line in started]

    yield start
    stop(children)


def test_dashboards_across_ranks(prometheus_for, ranks):
    """Four ranks scraped on four ports: every query of the two rank-aware dashboards is valid with any rank
    selection, the rank variable lists the ranks, and the straggler panels name the slow rank."""
    boards = {name: json.loads((DASHBOARDS / f"{name}.json").read_text())
              for name in ("training", "slow-phases")}
    children, experiment_ids, ports = ranks(free_port())
    (experiment_id,) = experiment_ids  # one launch, one experiment
    assert len(set(ports)) == 4
    server = prometheus_for(ports)
    selector = f'lezea_experiment_id="{experiment_id}"'
    # Every rank scraped at least three times with its phase count growing: rate() and deriv() have samples.
    server.wait_for( f"count(count_over_time(lezea_training_step{{{selector}}}[1m]) >= 3) == 4", timeout_s=30)
    server.wait_for( f"count(increase(lezea_phase_duration_seconds_count{{{selector}}}[1m]) > 0) == 4",
             timeout_s=30)
    for recorded in (STEP_RATE, PHASE_P95):  # the recording rules the per-rank panels read, for every rank
        server.wait_for(f"count({recorded}{{{selector}}} >= 0) == 4", timeout_s=30)

    values = {"experiment": experiment_id, "experiment_name": ".+", "__range": "10m", "__rate_interval": "1m",
              "__interval": "15s", "stale_after": str(STALE_AFTER_S), "value": "lezea_training_loss",
              "phase": ".+", "rank": ".*", "collector": ".+"}

    def answer(board: str, title: str, ref: str = "A", **chosen: str) -> list[dict]:
        (expr,) = [t["expr"] for t in panel(boards[board], title)["targets"] if t["refId"] == ref]
        result = server.query(substitute(expr, values | chosen))
        assert result.get("status") == "success", (title, ref, result)
        return result["data"]["result"]

    # The rank variable offers the four ranks; every query is valid with All, one rank and several
    # (Grafana's multi-value regex), and filters by it.
    for board in boards.values():
        assert sorted(label_values(server, rank_variable(board), values), key=int) == ["0", "1", "2", "3"]
        for rank in (".*", "2", "(0|2)"):
            for where, expr in prometheus_queries(board):
                result = server.query(substitute(expr, values | {"rank": rank}))
                assert result.get("status") == "success", (where, rank, expr, result)
    chosen = answer("training", "Step by rank", rank="(0|2)")
    assert sorted(r["metric"]["dl_rank"] for r in chosen) == ["0", "2"]
    per_rank = answer("slow-phases", "Phase p95 by rank")
    assert sorted(r["metric"]["dl_rank"] for r in per_rank) == ["0", "1", "2", "3"]

    # Training: the rank stepping slowest, named, far below the median rank's steps per second.
    rates = {r["metric"]["dl_rank"]: float(r["value"][1])
             for r in answer("training", "Steps per second by rank")}
    assert min(rates, key=rates.get) == str(SLOW_RANK), rates
    (straggler,) = answer("training", "Slowest rank (steps per second below the median)")
    assert straggler["metric"]["dl_rank"] == str(SLOW_RANK)
    assert float(straggler["value"][1]) > 0.5, straggler  # 0.6 s against 0.05 s of work per step
    texts = status_texts(boards["training"], "Ranks")

    def rank_statuses() -> dict[str, str]:
        return {r["metric"]["dl_rank"]: texts[r["value"][1]] for r in answer("training", "Ranks")}

    assert rank_statuses() == {str(rank): "running" for rank in range(4)}
    behind = {r["metric"]["dl_rank"]: float(r["value"][1]) for r in answer("training", "Ranks", "C")}
    assert max(behind, key=behind.get) == str(SLOW_RANK) and min(behind.values()) == 0

    # Slow phases: per phase, the rank with the highest p95, its p95 against the median rank's.
    title = "Straggler per phase (p95 in range)"
    columns = {ref: answer("slow-phases", title, ref) for ref in "ABCD"}
    assert {ref: [(r["metric"]["lezea_phase_name"], r["metric"]["dl_rank"]) for r in result]
            for ref, result in columns.items()} == {ref: [("forward", str(SLOW_RANK))] for ref in "ABCD"}
    slowest, median, fastest, spread = (float(columns[ref][0]["value"][1]) for ref in "ABCD")
    assert slowest > 0.5 and fastest <= median < slowest / 2, (slowest, median, fastest)
    assert spread == pytest.approx(slowest / median) and spread > 2

    # Every query of a table carries the same labels: Grafana's merge makes one row per run, rank or phase.
    for board, table in (("training", "Runs"), ("training", "Ranks"), ("slow-phases", title)):
        rows = {tuple(sorted(json.dumps(r["metric"], sort_keys=True)
                             for r in answer(board, table, target["refId"])))
                for target in panel(boards[board], table)["targets"]}
        assert len(rows) == 1, (table, rows)

    # A rank killed while the others go on: the Ranks table shows it stopped once its heartbeat is older
    # than stale_after; the run is still running, with its 4 ranks.
    os.kill(children[1].pid, signal.SIGKILL)
    children[1].wait(10)
    deadline = time.monotonic() + 20
    while (shown := rank_statuses())["1"] != "stopped" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert shown == {"0": "running", "1": "stopped", "2": "running", "3": "running"}
    run_texts = status_texts(boards["training"])
    assert [run_texts[r["value"][1]] for r in answer("training", "Runs")] == ["running"]
    assert [r["value"][1] for r in answer("training", "Runs", "F")] == ["4"]

    survivors = [child for rank, child in enumerate(children) if rank != 1]
    for child in survivors:
        child.stdin.close()
    for child in survivors:
        assert child.wait(30) == 0


def test_dashboards_against_real_runs(capture, tmp_path, prometheus_for, killed_run):
    boards = {path.stem: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}
    live_port, finished_port, killed_port = free_port(), free_port(), free_port()
    server = prometheus_for([live_port, finished_port, killed_port])
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
              "value": "lezea_training_loss", "phase": ".+", "rank": ".*", "collector": ".+"}
    training = boards["training"]
    (runs_table,) = [p for p in panels(training["panels"]) if p["title"] == "Runs" and p["type"] == "table"]
    runs_query = substitute(runs_table["targets"][0]["expr"], values)
    texts = status_texts(training)

    def statuses() -> dict[str, str]:
        answer = server.query(runs_query)
        assert answer["status"] == "success", answer
        shown = {r["metric"]["lezea_experiment_id"]: texts[r["value"][1]] for r in answer["data"]["result"]}
        return {name: shown.get(run_id, "absent") for name, run_id in ids.items()}

    # Two scrapes of every run, so rate()/deriv() have samples to work on.
    for run_id in ids.values():
        server.wait_for(
                 f'count_over_time(lezea_run_heartbeat_seconds{{lezea_experiment_id="{run_id}"}}[1m]) >= 2',
                 timeout_s=30)
    server.wait_for(f'{STEP_RATE}{{lezea_experiment_id="{ids["live"]}"}}')  # the rule evaluated on them
    assert statuses() == {"live": "running", "finished": "running", "killed": "running"}

    os.kill(child.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    child.wait(10)
    assert statuses()["killed"] == "running"  # a heartbeat younger than stale_after: not yet stopped

    # finalize waits (bounded) for one more scrape, so Prometheus sees the final status.
    finished.finalize_experiment()
    assert server.query(f'lezea_run_state{{lezea_experiment_id="{ids["finished"]}", '
                        f'lezea_run_status="finished"}} == 1')["data"]["result"]

    # (a) Every Prometheus query of every dashboard is valid PromQL once the variables are filled in.
    for board in boards.values():
        for where, expr in prometheus_queries(board):
            answer = server.query(substitute(expr, values))
            assert answer.get("status") == "success", (where, expr, answer)
    # ... and the Training dashboard's queries find the runs.
    empty = [(where, expr) for where, expr in prometheus_queries(training)
             if not server.query(substitute(expr, values))["data"]["result"]]
    assert empty == []

    # (b) The killed run turns "stopped" once its heartbeat is older than stale_after; the others keep theirs.
    deadline = time.monotonic() + 20
    while (shown := statuses())["killed"] != "stopped" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert shown == {"live": "running", "finished": "finished", "killed": "stopped"}
    assert time.monotonic() - killed_at >= STALE_AFTER_S - 1.5  # not stopped before the threshold
    # Its series went stale on the failed scrapes, yet the table still lists it with its last step.
    stale = server.query(f'lezea_run_heartbeat_seconds{{lezea_experiment_id="{killed_id}"}}')
    assert stale["data"]["result"] == []
    (step_query,) = [t["expr"] for t in runs_table["targets"] if t["refId"] == "B"]
    steps = {r["metric"]["lezea_experiment_id"]: r["value"][1]
             for r in server.query(substitute(step_query, values))["data"]["result"]}
    assert steps == {ids["live"]: "6", ids["finished"]: "5", killed_id: "3"}
    # A single process has no dl_rank: the rank variable offers nothing, All (.*) still matches it.
    assert label_values(server, rank_variable(training), values) == []
    (ranks_query,) = [t["expr"] for t in runs_table["targets"] if t["refId"] == "F"]
    ranks = {r["metric"]["lezea_experiment_id"]: r["value"][1]
             for r in server.query(substitute(ranks_query, values))["data"]["result"]}
    assert ranks == {run_id: "1" for run_id in ids.values()}
    live.finalize_experiment()
