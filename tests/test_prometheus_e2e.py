"""End to end with a real Prometheus (Debian package `prometheus`): it scrapes the run's /metrics,
and PromQL finds the training metrics by experiment id."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def prometheus(tmp_path):
    def start(target_port: int) -> str:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: lezea\n    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n")
        process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(process)
        return f"http://127.0.0.1:{port}"

    processes: list[subprocess.Popen[bytes]] = []
    yield start
    for process in processes:
        process.terminate()
        process.wait(20)


def query(base: str, promql: str) -> list[dict]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        answer = json.loads(urllib.request.urlopen(url, timeout=5).read())
    except OSError:
        return []
    return answer.get("data", {}).get("result", [])


def wait_for(base: str, promql: str, timeout_s: float = 45.0) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = query(base, promql)
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"Prometheus never answered {promql!r}")


def test_promql_finds_the_run(capture, prometheus):
    """Training values, phase histograms and target_info are queryable by lezea_experiment_id."""
    port = free_port()
    tracker = capture.tracker("e2e")
    tracker.start(prometheus_port=port)
    base = prometheus(port)
    with tracker.builder_scope("42"):
        for step in range(1, 6):
            with tracker.span("forward"):
                tracker.log_training_step(step, {"loss": 1.0 / step}, data_split="train")
    selector = f'lezea_experiment_id="{tracker.experiment_id}"'
    (loss,) = wait_for(base, f'lezea_training_loss{{{selector}}}')
    assert float(loss["value"][1]) == pytest.approx(0.2)
    assert loss["metric"]["lezea_scope"] == "builder:42" and loss["metric"]["lezea_data_split"] == "train"
    (count,) = wait_for(base, f'lezea_phase_duration_seconds_count{{{selector}, lezea_phase_name="forward"}}')
    assert float(count["value"][1]) == 5
    assert wait_for(base, f'lezea_training_step{{{selector}}}')[0]["value"][1] == "5"
    info = wait_for(base, 'target_info{job="lezea"}')[0]["metric"]
    assert info["lezea_experiment_id"] == tracker.experiment_id and info["service_name"] == "lezea"
    tracker.finalize_experiment()
