"""The shipped alerts raised by real runs in the real Prometheus 3: runs scraped from their /metrics (and
one sent over OTLP through the shipped Collector), the rules written by ``scripts/rules.py`` with short
thresholds (``--set``, as a user changes them) and evaluated every second.

A run that stops stepping while alive, a run killed with SIGKILL, a NaN loss, the slow rank of a 4-rank
``torchrun`` and a run whose collector does not answer each raise their alert
(``ALERTS{alertstate="firing"}``); a healthy run raises none.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from .stack import ROOT, Collector, Prometheus, free_port, wait_until

SHORT = {"interval": "1s", "window": "10s", "lookback": "10m", "stalled_after": "4s", "stalled_for": "0s",
         "dead_after": "4s", "died_for": "0s", "straggler_for": "3s", "slow_phase_for": "3s",
         "straggler_share": "0.5", "slow_phase_factor": "4", "behind_after": "5s", "behind_for": "0s"}
"""Thresholds a few seconds long, set the way a user sets them (scripts/rules.py --set). The slow rank works
12 times longer per step than the others: the straggler margins are wide so that a fast rank briefly starved
of CPU on this 2-core machine (four ranks and five servers share it) is no straggler."""

RUN = """
import json, sys, threading, time
from lezea_otel import ExperimentTracker
mode, runs_dir, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
tracker = ExperimentTracker(mode, runs_dir=runs_dir, quiet=True).start(prometheus_port=port or None)
start = next(r for r in map(json.loads, tracker.audit_path.read_text().splitlines())
             if r["kind"] == "experiment_start")
print(tracker.experiment_id, start["data"]["prometheus_port"], flush=True)
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
step = 0
while not stop.is_set():  # until the test closes stdin
    step += 1
    if mode == "stalls" and step > 5:
        stop.wait()  # alive, its heartbeat going on, no step any more
        break
    with tracker.span("forward"):
        time.sleep(0.02)
    tracker.log_training_step(step, {"loss": float("nan") if mode == "nan" and step == 3 else 1.0 / step})
    stop.wait(0.05)
tracker.finalize_experiment()
"""

RANK = """
import json, os, sys, time
from pathlib import Path
from lezea_otel import ExperimentTracker
folder = Path(sys.argv[1])
tracker = ExperimentTracker("ranks", runs_dir=folder / "runs", quiet=True)
tracker.start(prometheus_port=int(sys.argv[2]))
start = next(r for r in map(json.loads, tracker.audit_path.read_text().splitlines())
             if r["kind"] == "experiment_start")
rank = os.environ["RANK"]
work_s = 0.25 if rank == "2" else 0.02  # rank 2 is slow; the ranks do not synchronise
(folder / f"rank-{rank}").write_text(f"{tracker.experiment_id} {start['data']['prometheus_port']}")
step = 0
while not (folder / "stop").exists():
    step += 1
    with tracker.span("forward"):
        time.sleep(work_s)
    tracker.log_training_step(step, {"loss": 1.0 / step})
tracker.finalize_experiment()
"""


def firing(prometheus: Prometheus, alert: str, experiment_id: str) -> list[dict]:
    return prometheus.result(f'ALERTS{{alertname="{alert}", alertstate="firing", '
                             f'lezea_experiment_id="{experiment_id}"}}')


def test_real_runs_raise_the_shipped_alerts(tmp_path):
    rules = tmp_path / "lezea.rules.yaml"
    written = subprocess.run([sys.executable, "scripts/rules.py", "-o", str(rules),
                              *(f"--set={k}={v}" for k, v in SHORT.items())], cwd=ROOT, capture_output=True,
                             text=True)
    assert written.returncode == 0, written.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LEZEA_RAISE"))}
    env["LEZEA_METRIC_EXPORT_INTERVAL_MS"] = "500"
    children: list[subprocess.Popen[str]] = []

    def run(mode: str, port: int = 0, **extra: str) -> tuple[str, int]:
        children.append(subprocess.Popen([sys.executable, "-c", RUN, mode, str(tmp_path / mode), str(port)],
                                         cwd=tmp_path, env=env | extra, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, text=True))
        experiment_id, served = children[-1].stdout.readline().split()
        return experiment_id, int(served) if served.isdigit() else 0  # no /metrics: "None"

    torchrun = None
    prometheus = collector = None
    try:
        scraped = {mode: run(mode, free_port()) for mode in ("healthy", "stalls", "killed")}
        # its collector's port answers nothing: the exporter falls behind for the otlp destination only
        scraped["behind"] = run("behind", free_port(), OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}")
        torchrun = subprocess.Popen(
            [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc-per-node=4",
             "--no-python", sys.executable, "-c", RANK, str(tmp_path), str(free_port())],
            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        ranks = wait_until(lambda: [(tmp_path / f"rank-{r}").read_text().split() for r in range(4)]
                           if all((tmp_path / f"rank-{r}").exists() for r in range(4)) else None,
                           "the four ranks to start", timeout_s=120)
        (ranks_id,) = {experiment_id for experiment_id, _port in ranks}
        prometheus = Prometheus(tmp_path / "prometheus", rules=[rules], evaluation_interval="1s",
                                targets=[port for _, port in scraped.values()] + [int(p) for _, p in ranks])
        prometheus.start()
        collector = Collector(tmp_path / "otelcol", PROMETHEUS_OTLP_ENDPOINT=prometheus.otlp_endpoint,
                              TEMPO_OTLP_ENDPOINT="127.0.0.1:1", LOKI_OTLP_ENDPOINT="http://127.0.0.1:1/otlp")
        collector.start()
        nan_id, _ = run("nan", 0, OTEL_EXPORTER_OTLP_ENDPOINT=collector.http_endpoint)  # pushed, not scraped

        killed_id, _ = scraped["killed"]
        prometheus.wait_for(f'count_over_time(lezea_run_heartbeat_seconds{{lezea_experiment_id="{killed_id}"}}'
                            "[1m]) >= 2")
        os.kill(children[2].pid, signal.SIGKILL)
        raised = {
            "LezeaRunDied": killed_id, "LezeaRunStalled": scraped["stalls"][0], "LezeaNonFiniteLoss": nan_id,
            "LezeaStragglerRank": ranks_id, "LezeaSlowPhaseRank": ranks_id,
            "LezeaExporterBehind": scraped["behind"][0]}
        for alert, experiment_id in raised.items():
            wait_until(lambda a=alert, e=experiment_id: firing(prometheus, a, e),
                       f"{alert} for {experiment_id}", timeout_s=60)
        for alert in ("LezeaStragglerRank", "LezeaSlowPhaseRank"):
            assert {a["metric"]["dl_rank"] for a in firing(prometheus, alert, ranks_id)} == {"2"}, alert
        (stalled,) = firing(prometheus, "LezeaRunStalled", scraped["stalls"][0])
        assert stalled["metric"]["severity"] == "warning" and "dl_rank" not in stalled["metric"]
        (behind,) = firing(prometheus, "LezeaExporterBehind", scraped["behind"][0])
        assert behind["metric"]["lezea_export_destination"] == "otlp"
        healthy_id, _ = scraped["healthy"]
        assert prometheus.result(f'ALERTS{{lezea_experiment_id="{healthy_id}"}}') == []
        assert prometheus.result(f'ALERTS{{lezea_experiment_id="{ranks_id}", dl_rank!="2"}}') == []
    finally:
        (tmp_path / "stop").touch()
        for child in children:
            child.stdin.close()  # the runs that live finish then
        for child in children:
            child.wait(30)
            child.stdout.close()
        if torchrun is not None:
            torchrun.wait(60)
            torchrun.stderr.close()
        for server in (collector, prometheus):
            if server is not None:
                server.stop()
