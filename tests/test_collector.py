"""The shipped Collector configs under the real Collector (the lezea distribution built from
``collector/builder-config.yaml``): each is valid and starts as it is, and the agent/gateway topology
delivers whole traces, each on one gateway, with the agent's load-balancing exporter over two gateways."""

from __future__ import annotations

import json
import shlex

import pytest
import yaml

from lezea_otel import ExperimentTracker

from .otlp_receiver import GrpcReceiver, HttpReceiver
from .stack import COLLECTOR_DIR, Collector, Prometheus, file_log_count, file_spans, wait_until

AGENT_ENV = COLLECTOR_DIR / "systemd" / "lezea-agent.env"
DROP_IN = COLLECTOR_DIR / "systemd" / "otelcol-contrib.service.d" / "lezea-agent.conf"


def agent_environment() -> dict[str, str]:
    """The shipped environment file as systemd reads it (KEY=value lines, values optionally quoted)."""
    env = {}
    for line in AGENT_ENV.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = " ".join(shlex.split(value))
    return env


def gateways(port_a: int, port_b: int) -> str:
    return f"[127.0.0.1:{port_a}, 127.0.0.1:{port_b}]"


@pytest.mark.parametrize("config", ["otelcol-config.yaml", "otelcol-gateway.yaml", "otelcol-agent.yaml"])
def test_every_shipped_config_is_valid_and_starts(tmp_path, config):
    """`validate`, then a real start until the health check answers, with the environment a deployment gives
    it (the agent: the shipped systemd environment file; the others: the compose defaults)."""
    env = agent_environment() if config == "otelcol-agent.yaml" else {}
    env.pop("OTELCOL_OPTIONS", None)
    collector = Collector(tmp_path, config, **env)
    checked = collector.validate()
    assert checked.returncode == 0, checked.stderr
    collector.start()
    collector.stop()
    assert collector.process is not None and collector.process.returncode == 0, collector.log_tail()


def test_validate_refuses_a_broken_config(tmp_path):
    """The check above can fail: an exporter used by a pipeline but not defined, an empty gateway list."""
    broken = yaml.safe_load((COLLECTOR_DIR / "otelcol-config.yaml").read_text())
    broken["service"]["pipelines"]["traces"]["exporters"].append("otlp_grpc/jaeger")
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    collector = Collector(tmp_path, str(path))
    answer = collector.validate()
    assert answer.returncode != 0 and "otlp_grpc/jaeger" in answer.stderr
    agent = Collector(tmp_path, "otelcol-agent.yaml")  # no OTEL_GATEWAY_ENDPOINTS: the unit's file is missing
    answer = agent.validate()
    assert answer.returncode != 0 and "no endpoints specified for the static resolver" in answer.stderr


def test_the_systemd_drop_in_gives_the_agent_its_queue_directory():
    """The packaged unit runs as a user that cannot create /var/lib/otelcol: the drop-in's StateDirectory
    makes the agent's default queue folder, owned by that user, and reads the shipped environment file."""
    lines = dict(line.split("=", 1) for line in DROP_IN.read_text().splitlines()
                 if "=" in line and not line.startswith("#"))
    agent = yaml.safe_load((COLLECTOR_DIR / "otelcol-agent.yaml").read_text())
    directory = agent["extensions"]["file_storage/queue"]["directory"]
    assert directory == "${env:OTELCOL_QUEUE_DIR:-/var/lib/otelcol/queue}"
    assert f"/var/lib/{lines['StateDirectory']}" == "/var/lib/otelcol/queue"
    assert lines["EnvironmentFile"] == f"/etc/otelcol-contrib/{AGENT_ENV.name}"
    assert agent_environment()["OTELCOL_OPTIONS"] == "--config=/etc/otelcol-contrib/otelcol-agent.yaml"


def test_agent_spreads_whole_traces_over_two_gateways(tmp_path, monkeypatch):
    """Runs through one agent and two gateways, until each gateway has had two: every span of a run's trace
    reaches the same gateway, its log records all reach one gateway too, and every run's metrics reach
    Prometheus."""
    monkeypatch.setenv("LEZEA_EXPORTER", "thread")
    prometheus = Prometheus(tmp_path / "prometheus")
    prometheus.start()
    tempo = [GrpcReceiver(keep_alive=True), GrpcReceiver(keep_alive=True)]
    loki = [HttpReceiver(keep_alive=True), HttpReceiver(keep_alive=True)]
    pool = [Collector(tmp_path / f"gateway-{i}", "otelcol-gateway.yaml",
                      PROMETHEUS_OTLP_ENDPOINT=prometheus.otlp_endpoint,
                      TEMPO_OTLP_ENDPOINT=f"127.0.0.1:{tempo[i].port}",
                      LOKI_OTLP_ENDPOINT=f"{loki[i].endpoint}/otlp") for i in range(2)]
    agent = Collector(tmp_path / "agent", "otelcol-agent.yaml",
                      OTEL_GATEWAY_ENDPOINTS=gateways(pool[0].grpc_port, pool[1].grpc_port))
    try:
        for collector in (*pool, agent):
            collector.start()
        runs: list[tuple[ExperimentTracker, str, list[int]]] = []  # (run, trace id, spans per gateway)
        while len(runs) < 6 or not all(sum(1 for *_, at in runs if at[i]) >= 2 for i in range(2)):
            assert len(runs) < 48, "every trace went to one gateway"
            tracker = ExperimentTracker(f"balanced-{len(runs)}", runs_dir=tmp_path / "runs",
                                        endpoint=agent.grpc_endpoint, protocol="grpc", quiet=True)
            tracker.start(prometheus_port=None)
            with tracker.builder_scope("0"), tracker.span("forward"):
                tracker.log_training_step(1, {"loss": 0.5})
            tracker.log_comment("done")
            tracker.finalize_experiment()
            trace = json.loads(tracker.audit_path.read_text().splitlines()[0])["trace_id"]
            spans = file_spans(tracker).keys()

            def landed(t: str = trace, expected: int = len(spans)) -> list[int] | None:
                """The trace's spans at each gateway, once all of them have arrived somewhere."""
                at = [sum(1 for s in receiver.received.spans() if s.trace_id.hex() == t)
                      for receiver in tempo]
                return at if sum(at) >= expected else None

            at = wait_until(landed, f"the spans of trace {trace} at a gateway")
            assert sorted(at) == [0, len(spans)], at  # whole, on one gateway
            runs.append((tracker, trace, at))
        # Logs are spread by trace id too: each run's records whole on one gateway (the exporter hashes a
        # log's trace id as text and a span's as bytes, so not always the gateway of its spans).
        for tracker, trace, _ in runs:

            def at_each_gateway(t: str = trace, expected: int = file_log_count(tracker)) -> list[int] | None:
                got = [sum(1 for r in receiver.received.log_records() if r.trace_id.hex() == t)
                       for receiver in loki]
                return got if sum(got) >= expected else None

            counts = wait_until(at_each_gateway, f"the logs of trace {trace}")
            assert sorted(counts) == [0, file_log_count(tracker)]
            prometheus.wait_for(f'lezea_training_loss{{lezea_experiment_id="{tracker.experiment_id}"}}')
    finally:
        for collector in (agent, *pool):
            collector.kill()
        prometheus.stop()
        for receiver in (*tempo, *loki):
            receiver.stop()
