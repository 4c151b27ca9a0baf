"""The real stack for the suite: the Collector distribution and Prometheus 3 that ``scripts/stack-bin.sh``
builds from their Go modules, started from the shipped files in ``collector/``.

Nothing shipped is rewritten: the Collector configs are used as they are, with the addresses the tests
need given as the environment variables the configs read (``${env:VAR:-compose default}``); Prometheus
gets the flags of ``compose.yaml`` and the shipped ``prometheus.yaml`` with only its scrape targets replaced
(and the storage path and listen address, which compose sets through its volume and port mapping).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from lezea_otel import ExperimentTracker

from .otlp_receiver import Received

ROOT = Path(__file__).resolve().parent.parent
COLLECTOR_DIR = ROOT / "collector"
T = TypeVar("T")


@functools.cache
def binaries() -> tuple[str, str]:
    """(collector, prometheus): built on first use, reused after (the script prints their paths)."""
    built = subprocess.run(["bash", str(ROOT / "scripts" / "stack-bin.sh")], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    otelcol, prometheus = built.stdout.split()
    return otelcol, prometheus


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], T], what: str, timeout_s: float = 30.0, every_s: float = 0.2) -> T:
    """``check()``'s first truthy answer; an AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = check()
        if answer:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)


def local_file(tracker: ExperimentTracker, signal: str) -> list[dict[str, Any]]:
    """The run's OTLP-JSON file of ``signal`` (spans, logs, metrics): what its exporter produced."""
    path = tracker.audit_path.parent / "otlp" / f"{signal}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def file_spans(tracker: ExperimentTracker) -> dict[str, dict[str, Any]]:
    return {span["spanId"]: span for request in local_file(tracker, "spans")
            for rs in request["resourceSpans"] for ss in rs["scopeSpans"] for span in ss["spans"]}


def file_log_count(tracker: ExperimentTracker) -> int:
    return sum(len(sl["logRecords"]) for request in local_file(tracker, "logs")
               for rl in request["resourceLogs"] for sl in rl["scopeLogs"])


def received_spans(received: Received) -> dict[str, Any]:
    return {span.span_id.hex(): span for span in received.spans()}


def _clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LEZEA_", "OTELCOL_"))}


def _get(url: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


class _Process:
    """A server process with a log file, started until its readiness URL answers 200."""

    name = "process"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return _clean_environment()

    def ready_url(self) -> str:
        raise NotImplementedError

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.command(), env=self.environment(), stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

        def ready() -> bool:
            assert self.process is not None and self.process.poll() is None, \
                f"{self.name} exited ({self.process and self.process.returncode}):\n{self.log_tail()}"
            return _get(self.ready_url(), 2)[0] == 200

        wait_until(ready, f"{self.name} to answer {self.ready_url()}\n{self.log_tail()}", timeout_s=60)

    def stop(self) -> None:
        """SIGTERM, as systemd or compose stop it: a clean shutdown."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)

    def kill(self) -> None:
        """SIGKILL: no shutdown at all."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(20)

    def log_tail(self, lines: int = 30) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class Collector(_Process):
    """The lezea Collector distribution on a shipped config (``otelcol-config.yaml``, agent, gateway).

    Its receivers, health check and queue directory are given free addresses and a folder of the test's;
    ``env`` adds what the config needs (backend endpoints, the agent's gateways)."""

    name = "otelcol"

    def __init__(self, workdir: Path, config: str = "otelcol-config.yaml", **env: str) -> None:
        super().__init__(workdir)
        self.config = COLLECTOR_DIR / config
        self.grpc_port, self.http_port, self.health_port = free_port(), free_port(), free_port()
        self.telemetry_port = free_port()
        self.queue_dir = workdir / "queue"
        self.env = {"OTELCOL_OTLP_GRPC_LISTEN": f"127.0.0.1:{self.grpc_port}",
                    "OTELCOL_OTLP_HTTP_LISTEN": f"127.0.0.1:{self.http_port}",
                    "OTELCOL_HEALTH_LISTEN": f"127.0.0.1:{self.health_port}",
                    "OTELCOL_QUEUE_DIR": str(self.queue_dir),
                    "OTELCOL_TELEMETRY_HOST": "127.0.0.1", "OTELCOL_TELEMETRY_PORT": str(self.telemetry_port),
                    **env}

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def command(self) -> list[str]:
        return [binaries()[0], f"--config={self.config}"]

    def environment(self) -> dict[str, str]:
        return _clean_environment() | self.env

    def ready_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}/"

    def telemetry(self) -> tuple[int, bytes]:
        """The Collector's own /metrics (status, body): what it accepted, sent, failed to send."""
        return _get(f"http://127.0.0.1:{self.telemetry_port}/metrics")

    def validate(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run([binaries()[0], "validate", f"--config={self.config}"], env=self.environment(),
                              capture_output=True, text=True, timeout=60)


def compose_service(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((COLLECTOR_DIR / "compose.yaml").read_text())["services"][name])


class Prometheus(_Process):
    """Prometheus 3 with compose's flags and the shipped ``prometheus.yaml``, scraping ``targets`` (none:
    it only takes what the Collector pushes to its OTLP receiver). Restarted, it keeps its storage."""

    name = "prometheus"

    def __init__(self, workdir: Path, targets: list[int] | tuple[int, ...] = (),
                 rules: list[Path] | None = None, evaluation_interval: str | None = None) -> None:
        """``rules``: rule files in place of the shipped ones (``rule_files``, relative to collector/), e.g.
        the same rules written with short thresholds; ``evaluation_interval``: in place of the global one."""
        super().__init__(workdir)
        self.port = free_port()
        config = yaml.safe_load((COLLECTOR_DIR / "prometheus.yaml").read_text())
        config["rule_files"] = [str(path) for path in rules] if rules is not None else [
            str(COLLECTOR_DIR / pattern) for pattern in config.get("rule_files", [])]
        if evaluation_interval:
            config["global"]["evaluation_interval"] = evaluation_interval
        config["scrape_configs"] = [{
            "job_name": "lezea", "scrape_interval": "1s", "scrape_timeout": "1s",
            "static_configs": [{"targets": [f"127.0.0.1:{port}" for port in targets]}]}] if targets else []
        self.config_path = workdir / "prometheus.yaml"
        self.config_path.write_text(yaml.safe_dump(config))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def otlp_endpoint(self) -> str:
        return f"{self.url}/api/v1/otlp"

    def command(self) -> list[str]:
        shipped = [flag for flag in compose_service("prometheus")["command"]
                   if not flag.startswith(("--config.file=", "--storage.tsdb.path="))]
        return [binaries()[1], *shipped, f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.workdir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{self.port}"]

    def ready_url(self) -> str:
        return f"{self.url}/-/ready"

    def query(self, expr: str, at: float | None = None) -> dict[str, Any]:
        """An instant query's whole answer, errors included (their HTTP status as ``http``)."""
        params = {"query": expr} | ({"time": f"{at:.3f}"} if at is not None else {})
        status, body = _get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode(params), 10)
        answer: dict[str, Any] = json.loads(body or b"{}")
        return answer if status == 200 else answer | {"http": status}

    def result(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        answer = self.query(expr, at)
        assert answer.get("status") == "success", (expr, answer)
        return list(answer["data"]["result"])

    def wait_for(self, expr: str, timeout_s: float = 45.0) -> list[dict[str, Any]]:
        return wait_until(lambda: self.query(expr).get("data", {}).get("result"), f"PromQL {expr!r}",
                          timeout_s=timeout_s, every_s=0.5)

    def label_values(self, label: str, match: str) -> list[str]:
        status, body = _get(f"{self.url}/api/v1/label/{label}/values?" + urllib.parse.urlencode(
            {"match[]": match, "start": f"{time.time() - 3600:.0f}"}))
        assert status == 200, body
        return list(json.loads(body)["data"])
