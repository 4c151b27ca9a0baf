"""Many ranks are one experiment, one trace: real ``torchrun`` launches (gloo, a real ``all_reduce`` per
step) against a real OTLP receiver, and the SLURM and MPI environments on plain processes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from lezea_otel.audit.reader import read_events

from .otlp_receiver import HttpReceiver

WARNED = re.compile(r"\d+ warnings?,|^start: ", re.M)
"""A rank's closing line counts its warnings; a warning about start() begins with the call's name."""
HERE = Path(__file__).resolve().parent
TORCHRUN = Path(sys.executable).with_name("torchrun")
TRAIN = HERE / "distributed_train.py"


def torchrun(cwd: Path, *arguments: str, env: dict[str, str] | None = None,
             timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """``torchrun ARGUMENTS distributed_train.py`` in ``cwd``; fails the test on a non-zero exit."""
    done = subprocess.run([str(TORCHRUN), *arguments, str(TRAIN)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def launch_env(receiver: HttpReceiver | None, **extra: str) -> dict[str, str]:
    import os

    env = {key: value for key, value in os.environ.items() if not key.startswith(("LEZEA_", "OTEL_"))}
    env.update({"LEZEA_QUIET": "0", "LEZEA_OBSERVERS": "0", **extra})
    if receiver is not None:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
    return env


def starts(experiment: Path) -> dict[str, dict[str, Any]]:
    """Each member folder's ``experiment_start`` data, by folder name."""
    return {audit.parent.name: next(e for e in read_events(audit) if e["kind"] == "experiment_start")["data"]
            for audit in sorted(experiment.glob("*/events.jsonl"))}


def spans_by_name(receiver: HttpReceiver) -> dict[str, list[Any]]:
    by_name: dict[str, list[Any]] = {}
    for span in receiver.received.spans():
        by_name.setdefault(span.name, []).append(span)
    return by_name


def lone_experiment(runs: Path) -> Path:
    (experiment,) = [folder for folder in runs.iterdir() if folder.is_dir()]
    return experiment


def test_four_torchrun_ranks_are_one_experiment_and_one_trace(tmp_path: Path) -> None:
    """4 ranks of one torchrun launch: one experiment id, one trace, rank 0's root with a lane per other
    rank under it, rank attributes on every signal, one audit per rank, and no port warning."""
    receiver = HttpReceiver()
    try:
        done = torchrun(tmp_path, "--standalone", "--nproc-per-node=4", env=launch_env(receiver))
    finally:
        receiver.stop()
    experiment = lone_experiment(tmp_path / "runs")
    uuid.UUID(experiment.name)  # derived from the launch: a UUID like any other experiment id
    members = starts(experiment)
    assert sorted(members) == ["rank-0", "rank-1", "rank-2", "rank-3"]
    assert {m["experiment_id"] for m in members.values()} == {experiment.name}
    assert [m["launch"]["rank"] for m in members.values()] == [0, 1, 2, 3]
    assert {m["launch"]["launcher"] for m in members.values()} == {"torchrun"}
    ports = [m["prometheus_port"] for m in members.values()]
    assert len(set(ports)) == 4, ports
    # get_experiment_summary(): each rank its own, and who it is (four processes share the pipe: each line
    # is found wherever it stands)
    summaries = [json.loads(found) for found in re.findall(r"SUMMARY (\{.*?\})(?=SUMMARY|\n|$)", done.stdout)]
    assert sorted((s["launch"]["rank"], s["launch"]["world_size"], s["steps"]) for s in summaries) == [
        (rank, 4, 5) for rank in range(4)], done.stdout[-3000:] + done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert not WARNED.search(output), output[-3000:]  # a taken port moves a rank on (said), never warned

    spans = spans_by_name(receiver)
    assert len({span.trace_id for span in receiver.received.spans()}) == 1
    (root,) = spans["experiment"]
    lanes = {name: found for name, found in spans.items() if name.startswith("rank ")}
    assert sorted(lanes) == ["rank 1", "rank 2", "rank 3"]
    assert all(lane.parent_span_id == root.span_id for (lane,) in lanes.values())
    by_id = {span.span_id: span for span in receiver.received.spans()}
    scopes = spans["builder"]
    assert len(scopes) == 4 and {by_id[s.parent_span_id].name for s in scopes} == {"experiment", *lanes}
    assert len(spans["all_reduce"]) == 4 * 5

    for signal in ("traces", "metrics", "logs"):
        resources = receiver.received.resources(signal)
        assert {r["dl.rank"] for r in resources} == {0, 1, 2, 3}, signal
        assert {(r["dl.world_size"], r["dl.launcher"], r["lezea.experiment.id"]) for r in resources} == {
            (4, "torchrun", experiment.name)}
    points = receiver.received.metric_points("lezea.training.loss")
    assert {attributes["dl.rank"] for attributes, _value in points} == {0, 1, 2, 3}
    comments = [r for r in receiver.received.log_records() if "done" in r.body.string_value]
    assert len(comments) == 4

    cli = Path(sys.executable).with_name("lezea-otel")
    listed = subprocess.run([str(cli), "runs", "runs"], cwd=tmp_path, capture_output=True, text=True,
                            check=True, env={**launch_env(None), "COLUMNS": "200"}).stdout
    assert listed.count(experiment.name[:8]) == 1 and "4 ranks: 4 finished" in listed, listed
    shown = subprocess.run([str(cli), "show", experiment.name], cwd=tmp_path, capture_output=True, text=True,
                           check=True, env={**launch_env(None), "COLUMNS": "200"}).stdout
    rows = [line for line in shown.splitlines() if "finished" in line and "│" in line]
    assert len(rows) >= 4, shown  # one row per rank


def test_two_nodes_on_one_machine_share_the_experiment(tmp_path: Path) -> None:
    """Two ``torchrun --nnodes=2`` agents (node ranks 0 and 1) with a c10d rendezvous on 127.0.0.1: one
    experiment of 4 ranks with their node ranks; the second node's /metrics ports move on, unwarned."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        rendezvous = probe.getsockname()[1]
    common = ["--nnodes=2", "--nproc-per-node=2", "--rdzv-backend=c10d",
              f"--rdzv-endpoint=127.0.0.1:{rendezvous}", f"--rdzv-id=two-nodes-{uuid.uuid4()}"]
    env = launch_env(None, STEPS="3")  # local mode: each rank's exporter serves /metrics, nothing else
    nodes = [subprocess.Popen([str(TORCHRUN), *common, f"--node-rank={node}", str(TRAIN)], cwd=tmp_path,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for node in (0, 1)]
    outputs = [node.communicate(timeout=240)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    members = starts(lone_experiment(tmp_path / "runs"))
    facts = sorted((m["launch"]["rank"], m["launch"]["node_rank"], m["launch"]["local_rank"])
                   for m in members.values())
    assert [rank for rank, _node, _local in facts] == [0, 1, 2, 3]
    assert Counter(node for _rank, node, _local in facts) == {0: 2, 1: 2}
    assert {m["launch"]["local_world_size"] for m in members.values()} == {2}
    assert {m["launch"]["world_size"] for m in members.values()} == {4}
    ports = [m["prometheus_port"] for m in members.values()]
    assert len(set(ports)) == 4, ports  # both "nodes" on one host: the second moved on
    assert not any(WARNED.search(output) for output in outputs), outputs


def test_a_restarted_worker_group_continues_the_experiment(tmp_path: Path) -> None:
    """Rank 1 fails in the first attempt; torchrun restarts the group: the second attempt is the same
    experiment and trace, in folders of its own, and the first attempt's record is kept."""
    receiver = HttpReceiver()
    try:
        torchrun(tmp_path, "--standalone", "--nproc-per-node=2", "--max-restarts=1",
                 env=launch_env(receiver, FAIL_RANK="1", FAIL_ATTEMPT="0", STEPS="3"))
    finally:
        receiver.stop()
    members = starts(lone_experiment(tmp_path / "runs"))
    assert sorted(members) == ["rank-0", "rank-0-attempt-1", "rank-1", "rank-1-attempt-1"]
    assert {name: m["launch"]["attempt"] for name, m in members.items()} == {
        "rank-0": 0, "rank-0-attempt-1": 1, "rank-1": 0, "rank-1-attempt-1": 1}
    experiment = lone_experiment(tmp_path / "runs")
    ends = {member: [e["data"]["status"] for e in read_events(experiment / member / "events.jsonl")
                     if e["kind"] == "experiment_end"] for member in members}
    assert ends == {"rank-0": ["finished"], "rank-1": ["failed"], "rank-0-attempt-1": ["finished"],
                    "rank-1-attempt-1": ["finished"]}
    assert len({span.trace_id for span in receiver.received.spans()}) == 1
    attempts = {r.get("dl.restart_attempt") for r in receiver.received.resources("traces")}
    assert attempts == {0, 1}


LAUNCHERS = {
    "slurm": ({"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "2", "SLURM_NODEID": "0"},
              lambda rank: {"SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)}),
    "mpi": ({"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
             "PMIX_NAMESPACE": "prterun-host-1234@1"},
            lambda rank: {"OMPI_COMM_WORLD_RANK": str(rank), "OMPI_COMM_WORLD_LOCAL_RANK": str(rank)}),
    "pmi": ({"PMI_SIZE": "2", "PMIX_NAMESPACE": "hydra-77"}, lambda rank: {"PMI_RANK": str(rank)}),
}
RECORD = """
import sys
from lezea_otel import ExperimentTracker
tracker = ExperimentTracker("plain", quiet=True)
tracker.start(prometheus_port=None)
with tracker.span("work"):
    tracker.log_training_step(1, {"loss": 0.5})
tracker.finalize_experiment()
"""


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_slurm_and_mpi_ranks_are_one_experiment(tmp_path: Path, launcher: str) -> None:
    """Two plain processes with a SLURM, Open MPI or PMI environment: the same experiment id and trace,
    their ranks and launcher on the resource, one folder each."""
    shared, per_rank = LAUNCHERS[launcher]
    processes = [subprocess.Popen([sys.executable, "-c", RECORD], cwd=tmp_path,
                                  env=launch_env(None, LEZEA_EXPORTER="none", **shared, **per_rank(rank)))
                 for rank in (0, 1)]
    assert [process.wait(timeout=120) for process in processes] == [0, 0]
    members = starts(lone_experiment(tmp_path / "runs"))
    assert sorted(members) == ["rank-0", "rank-1"]
    resources = [m["resource"] for m in members.values()]
    assert [(r["dl.rank"], r["dl.world_size"]) for r in resources] == [(0, 2), (1, 2)]
    expected = {"slurm": "slurm", "mpi": "mpi", "pmi": "pmi"}[launcher]
    assert {r["dl.launcher"] for r in resources} == {expected}
    traces = {e["trace_id"] for member in members for e in read_events(
        lone_experiment(tmp_path / "runs") / member / "events.jsonl")}
    assert len(traces) == 1
    assert [m["rank_lane"] for m in members.values()] == [False, True]


def test_a_lone_process_is_a_fresh_uuid4_run(tmp_path: Path) -> None:
    """No launcher: as the spec says, a fresh UUID4 per run and the plain folder, two runs two ids."""
    for _ in range(2):
        subprocess.run([sys.executable, "-c", RECORD], cwd=tmp_path, check=True,
                       env=launch_env(None, LEZEA_EXPORTER="none"))
    folders = sorted(folder for folder in (tmp_path / "runs").iterdir())
    assert len(folders) == 2
    assert all(uuid.UUID(f.name).version == 4 and (f / "events.jsonl").is_file() for f in folders)


def test_experiment_id_and_traceparent_given_win(tmp_path: Path) -> None:
    """``LEZEA_EXPERIMENT_ID`` names the run; a ``TRACEPARENT`` makes its root a child of that span in that
    trace; a second run of the same id goes beside the first, never into its audit."""
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    for _ in range(2):
        subprocess.run([sys.executable, "-c", RECORD], cwd=tmp_path, check=True,
                       env=launch_env(None, LEZEA_EXPORTER="none", LEZEA_EXPERIMENT_ID="nightly-7",
                                      TRACEPARENT=parent))
    experiment = tmp_path / "runs" / "nightly-7"
    audits = [experiment / "events.jsonl", experiment / "attempt-1" / "events.jsonl"]
    for audit in audits:
        start = next(e for e in read_events(audit) if e["kind"] == "experiment_start")
        assert start["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
        assert start["parent_span_id"] == "b7ad6b7169203331"
        assert [e["kind"] for e in read_events(audit)].count("experiment_start") == 1


CHILD = """
import subprocess, sys
from lezea_otel import ExperimentTracker
if sys.argv[1] == "parent":
    tracker = ExperimentTracker("parent", quiet=True)
    tracker.start(prometheus_port=None)
    with tracker.builder_scope("b1"):
        subprocess.run([sys.executable, __file__, "child"], env=tracker.child_env(), check=True)
    tracker.finalize_experiment()
else:
    tracker = ExperimentTracker("evaluation", quiet=True)
    tracker.start(prometheus_port=None)
    with tracker.span("eval"):
        tracker.log_training_step(1, {"loss": 0.25})
    tracker.finalize_experiment()
"""


def test_a_child_process_joins_under_the_current_span(tmp_path: Path) -> None:
    """``tracker.child_env()``: a subprocess's tracker records into the parent's folder, in its trace, its
    root span a child of the scope open when the environment was made."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    receiver = HttpReceiver()
    try:
        subprocess.run([sys.executable, str(script), "parent"], cwd=tmp_path, check=True,
                       env=launch_env(receiver))
    finally:
        receiver.stop()
    experiment = lone_experiment(tmp_path / "runs")
    (child_audit,) = experiment.glob("children/*/events.jsonl")
    start = next(e for e in read_events(child_audit) if e["kind"] == "experiment_start")
    assert start["data"]["experiment_id"] == experiment.name and start["data"]["child"] is True
    spans = spans_by_name(receiver)
    (scope,), (child,), (evaluation,) = spans["builder"], spans["child process"], spans["eval"]
    assert child.parent_span_id == scope.span_id and evaluation.parent_span_id == child.span_id
    assert len({span.trace_id for span in receiver.received.spans()}) == 1
    assert json.loads(json.dumps(start["data"]["launch"]))["rank"] is None


@pytest.mark.parametrize(("choice", "exporting"), [("node", {0, 2}), ("rank0", {0}), ("0", {0})])
def test_span_volume_is_chosen_per_rank(tmp_path: Path, choice: str, exporting: set[int]) -> None:
    """``LEZEA_SPAN_RANKS``: only the chosen ranks export their phase spans (2 nodes of 2 ranks here);
    every rank's lane, metrics and log records still arrive, and the audit keeps every phase."""
    receiver = HttpReceiver()
    try:
        processes = [subprocess.Popen(
            [sys.executable, "-c", RECORD], cwd=tmp_path,
            env=launch_env(receiver, LEZEA_SPAN_RANKS=choice, TORCHELASTIC_RUN_ID="volume", RANK=str(rank),
                           LOCAL_RANK=str(rank % 2), WORLD_SIZE="4", LOCAL_WORLD_SIZE="2",
                           GROUP_RANK=str(rank // 2))) for rank in range(4)]
        assert [process.wait(timeout=120) for process in processes] == [0, 0, 0, 0]
    finally:
        receiver.stop()
    experiment = lone_experiment(tmp_path / "runs")
    lanes = {span.parent_span_id for span in spans_by_name(receiver)["work"]}
    by_id = {span.span_id: span for span in receiver.received.spans()}
    names = {by_id[lane].name for lane in lanes}
    assert names == {"experiment" if rank == 0 else f"rank {rank}" for rank in exporting}
    assert {"rank 1", "rank 2", "rank 3"} <= {span.name for span in receiver.received.spans()}
    points = receiver.received.metric_points("lezea.training.loss")
    assert {attributes["dl.rank"] for attributes, _value in points} == {0, 1, 2, 3}
    for rank in range(4):
        audit = experiment / f"rank-{rank}" / "events.jsonl"
        assert [e["data"].get("name") for e in read_events(audit) if e["kind"] == "phase"] == ["work"]
