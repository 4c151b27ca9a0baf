"""Settings: argument > LEZEA_* > OTEL_* > default; local mode; invalid values; strict mode;
the Prometheus /metrics endpoint; and the OTel resource every signal carries."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

import lezea_otel
from lezea_otel import ExperimentTracker, LezeaConfigError
from lezea_otel.audit.reader import read_events
from lezea_otel.testing import Capture

from .otlp_receiver import HttpReceiver


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def resource_of(capture: Capture, tracker: ExperimentTracker) -> dict[str, Any]:
    """The resource attributes on the experiment span, as a backend receives them."""
    tracker.finalize_experiment()
    (root,) = capture.spans("experiment")
    return dict(root.resource.attributes)


def listening_ports() -> set[int]:
    connections = psutil.Process().net_connections(kind="inet")
    return {c.laddr.port for c in connections if c.status == psutil.CONN_LISTEN}


@pytest.fixture(autouse=True)
def _no_default_prometheus_port(monkeypatch):
    """start() with no arguments must not try port 8000 in these tests."""
    monkeypatch.setenv("LEZEA_PROMETHEUS_PORT", "0")


class TestPrecedence:
    def test_runs_dir_argument_beats_variable_beats_default(self, monkeypatch, tmp_path):
        """runs_dir=... wins over LEZEA_RUNS_DIR, which wins over ./runs."""
        default = ExperimentTracker("default", quiet=True)
        expected = tmp_path.resolve() / "runs" / default.experiment_id / "events.jsonl"
        assert default.audit_path.resolve() == expected
        monkeypatch.setenv("LEZEA_RUNS_DIR", str(tmp_path / "from-env"))
        from_env = ExperimentTracker("env", quiet=True)
        assert from_env.audit_path == tmp_path / "from-env" / from_env.experiment_id / "events.jsonl"
        from_arg = ExperimentTracker("arg", quiet=True, runs_dir=tmp_path / "from-arg")
        assert from_arg.audit_path == tmp_path / "from-arg" / from_arg.experiment_id / "events.jsonl"
        for tracker in (default, from_env, from_arg):
            tracker.finalize_experiment()
            assert tracker.audit_path.is_file()

    def test_service_name_default(self, capture):
        """With nothing configured the service is called 'lezea'."""
        assert resource_of(capture, capture.tracker("a", auto_start=True))["service.name"] == "lezea"

    def test_otel_service_name_reaches_the_spans(self, capture, monkeypatch):
        """OTEL_SERVICE_NAME becomes the resource's service.name."""
        monkeypatch.setenv("OTEL_SERVICE_NAME", "trainer")
        assert resource_of(capture, capture.tracker("b", auto_start=True))["service.name"] == "trainer"

    def test_lezea_service_name_beats_otel(self, capture, monkeypatch):
        """LEZEA_SERVICE_NAME wins over OTEL_SERVICE_NAME."""
        monkeypatch.setenv("OTEL_SERVICE_NAME", "trainer")
        monkeypatch.setenv("LEZEA_SERVICE_NAME", "lezea-trainer")
        assert resource_of(capture, capture.tracker("c", auto_start=True))["service.name"] == "lezea-trainer"

    def test_argument_beats_every_variable(self, capture, monkeypatch):
        """service_name=... wins over both variables."""
        monkeypatch.setenv("OTEL_SERVICE_NAME", "trainer")
        monkeypatch.setenv("LEZEA_SERVICE_NAME", "lezea-trainer")
        tracker = capture.tracker("d", service_name="from-code", auto_start=True)
        assert resource_of(capture, tracker)["service.name"] == "from-code"


class TestLocalAndOtlpMode:
    def test_no_endpoint_is_local_mode(self, capture):
        """Without an endpoint nothing is sent over OTLP: the targets are the local files only."""
        tracker = capture.tracker("local", auto_start=True)
        assert tracker.settings.otlp_signals == frozenset()
        tracker.log_training_step(1, {"loss": 0.5})
        summary = tracker.finalize_experiment()
        assert summary["experiment"]["targets"]
        assert all(t.startswith("files ") for t in summary["experiment"]["targets"])
        assert summary["delivery"]["mode"] == "local"

    def test_generic_endpoint_sends_all_three_signals(self, capture, monkeypatch):
        """OTEL_EXPORTER_OTLP_ENDPOINT alone sends traces, metrics and logs to that collector."""
        receiver = HttpReceiver()
        try:
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
            tracker = capture.tracker("otlp", auto_start=True)
            assert tracker.settings.otlp_signals == {"traces", "metrics", "logs"}
            tracker.log_training_step(1, {"loss": 0.5})
            summary = tracker.finalize_experiment()
        finally:
            receiver.stop()
        assert summary["delivery"]["mode"] == "otlp"
        assert any("OTLP" in t for t in summary["experiment"]["targets"])
        got = receiver.received
        assert any(s.name == "experiment" for s in got.spans())
        assert any(p[1] == 0.5 for p in got.metric_points("lezea.training.loss"))
        assert got.log_records()
        for signal in ("traces", "metrics", "logs"):
            assert {r["lezea.experiment.id"] for r in got.resources(signal)} == {tracker.experiment_id}

    def test_traces_exporter_none_removes_traces(self, capture, monkeypatch):
        """OTEL_TRACES_EXPORTER=none: metrics and logs still go out, no span reaches the collector."""
        receiver = HttpReceiver()
        try:
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
            monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
            tracker = capture.tracker("no-traces", auto_start=True)
            assert tracker.settings.otlp_signals == {"metrics", "logs"}
            tracker.log_training_step(1, {"loss": 0.5})
            tracker.finalize_experiment()
        finally:
            receiver.stop()
        assert receiver.received.requests["traces"] == []
        assert receiver.received.metric_points("lezea.training.loss")
        assert receiver.received.log_records()
        assert capture.spans("experiment")  # local spans are unaffected


    def test_local_mode_does_not_wait_on_the_network(self, capture):
        """start() and finalize in local mode return at once (well under the shutdown timeout)."""
        began = time.monotonic()
        tracker = capture.tracker("fast", auto_start=True)
        tracker.log_training_step(1, {"loss": 0.5})
        tracker.finalize_experiment()
        assert time.monotonic() - began < 4.0

class TestInvalidValues:
    @pytest.mark.parametrize(("variable", "value", "field", "default"), [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "bogus", "protocol", "http/protobuf"),
        ("LEZEA_SHUTDOWN_TIMEOUT", "-1", "shutdown_timeout_s", 5.0),
        ("OTEL_METRIC_EXPORT_INTERVAL", "abc", "metric_export_interval_ms", 15_000.0),
        ("LEZEA_AUDIT_FSYNC", "sometimes", "audit_fsync", "interval"),
    ])
    def test_invalid_value_is_one_warning_at_start_and_the_default(
            self, capture, monkeypatch, lezea_warnings, variable, value, field, default):
        """Silent at construction; one warning at start() naming variable and value; the default is used."""
        monkeypatch.setenv(variable, value)
        tracker = capture.tracker("bad")
        assert lezea_warnings() == []
        tracker.start(prometheus_port=None)
        tracker.start(prometheus_port=None)  # a second start does nothing, and says nothing again
        messages = lezea_warnings()
        assert len(messages) == 1, messages
        assert variable in messages[0] and repr(value) in messages[0]
        assert getattr(tracker.settings, field) == default
        tracker.log_training_step(1, {"loss": 0.5})
        assert tracker.finalize_experiment()["steps"]["count"] == 1

    def test_invalid_export_interval_does_not_change_the_reader(self, capture, monkeypatch, tmp_path):
        """With OTEL_METRIC_EXPORT_INTERVAL=abc the run still exports metrics to its local file."""
        monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "abc")
        tracker = capture.tracker("interval", auto_start=True)
        tracker.log_training_step(1, {"loss": 0.5})
        tracker.finalize_experiment()
        assert "lezea.training.loss" in (tracker.run_dir / "otlp" / "metrics.jsonl").read_text()


class TestStrict:
    def test_strict_argument_raises_at_start_only(self, capture, monkeypatch):
        """start(strict=True) raises LezeaConfigError naming the setting; construction does not raise."""
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "bogus")
        tracker = capture.tracker("strict")
        with pytest.raises(LezeaConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL") as raised:
            tracker.start(strict=True, prometheus_port=None)
        assert isinstance(raised.value, ValueError)
        assert raised.value.__class__ is lezea_otel.LezeaConfigError

    def test_lezea_strict_variable_raises_at_start_only(self, capture, monkeypatch):
        """LEZEA_STRICT=1 makes a plain start() raise; constructing the tracker still works."""
        monkeypatch.setenv("LEZEA_STRICT", "1")
        monkeypatch.setenv("LEZEA_SHUTDOWN_TIMEOUT", "-1")
        tracker = capture.tracker("strict-env")
        with pytest.raises(LezeaConfigError, match="LEZEA_SHUTDOWN_TIMEOUT"):
            tracker.start(prometheus_port=None)

    def test_strict_false_overrides_the_variable(self, capture, monkeypatch, lezea_warnings):
        """start(strict=False) with LEZEA_STRICT=1 warns instead of raising."""
        monkeypatch.setenv("LEZEA_STRICT", "1")
        monkeypatch.setenv("LEZEA_SHUTDOWN_TIMEOUT", "-1")
        tracker = capture.tracker("lenient")
        tracker.start(strict=False, prometheus_port=None)
        assert any("LEZEA_SHUTDOWN_TIMEOUT" in m for m in lezea_warnings())
        tracker.finalize_experiment()

    def test_strict_with_a_clean_configuration_starts(self, capture):
        """strict=True does not raise when nothing is wrong."""
        tracker = capture.tracker("clean")
        assert tracker.start(strict=True, prometheus_port=None) is tracker
        assert tracker.finalize_experiment()["status"] == "finished"


class TestPrometheus:
    def test_metrics_endpoint_serves_training_values(self, capture):
        """start(prometheus_port=N) serves /metrics over HTTP with the loss and the experiment id label."""
        port = free_port()
        tracker = capture.tracker("prom")
        tracker.start(prometheus_port=port)
        tracker.log_training_step(3, {"loss": 0.375})
        deadline = time.monotonic() + 5  # the audit reaches the exporter within 200 ms
        body = ""
        while "lezea_training_loss{" not in body and time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                assert response.status == 200
                body = response.read().decode()
        tracker.finalize_experiment()
        lines = [x for x in body.splitlines() if x.startswith("lezea_training_loss{")]
        assert len(lines) == 1, body
        assert f'lezea_experiment_id="{tracker.experiment_id}"' in lines[0]
        assert float(lines[0].rsplit(" ", 1)[1]) == 0.375

    def test_endpoint_closes_at_finalize(self, capture):
        """After finalize the port is released."""
        port = free_port()
        tracker = capture.tracker("prom-close")
        tracker.start(prometheus_port=port)
        tracker.finalize_experiment()
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))

    def test_port_from_lezea_prometheus_port(self, capture, monkeypatch):
        """LEZEA_PROMETHEUS_PORT chooses the port when start() is called without one."""
        port = free_port()
        monkeypatch.setenv("LEZEA_PROMETHEUS_PORT", str(port))
        tracker = capture.tracker("prom-env")
        tracker.start()
        tracker.log_training_step(1, {"loss": 0.5})
        deadline = time.monotonic() + 5  # the audit reaches the exporter within 200 ms
        body = ""
        try:
            while "lezea_training_loss{" not in body and time.monotonic() < deadline:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        finally:
            tracker.finalize_experiment()
        assert "lezea_training_loss{" in body

    def test_a_busy_port_moves_the_run_to_the_next_free_one(self, capture, lezea_warnings):
        """A port someone else holds (another run on this host): no warning, /metrics on the next free
        port, named in the targets and the start record, serving this run."""
        with socket.socket() as blocker:
            blocker.bind(("127.0.0.1", 0))
            blocker.listen()
            port = blocker.getsockname()[1]
            tracker = capture.tracker("busy")
            tracker.start(prometheus_port=port)
            for step in range(1, 4):
                tracker.log_training_step(step, {"loss": 1.0 / step})
            targets = tracker.get_experiment_summary()["experiment"]["targets"]
            (target,) = [t for t in targets if "/metrics" in t]
            served = int(target.rsplit(":", 1)[1])
            capture.sync()  # what was recorded reached the exporter
            body = urllib.request.urlopen(f"http://127.0.0.1:{served}/metrics", timeout=10).read().decode()
            summary = tracker.finalize_experiment()
        assert lezea_warnings() == []
        assert served != port and "lezea_training_loss{" in body
        start = next(e for e in read_events(tracker.audit_path) if e["kind"] == "experiment_start")
        assert start["data"]["prometheus_port"] == served
        assert summary["steps"]["count"] == 3

    def test_port_none_serves_nothing(self, capture):
        """prometheus_port=None opens no listening socket at all."""
        before = listening_ports()
        tracker = capture.tracker("off")
        tracker.start(prometheus_port=None)
        tracker.log_training_step(1, {"loss": 0.5})
        opened = listening_ports() - before
        summary = tracker.finalize_experiment()
        assert opened == set()
        assert not any("/metrics" in t for t in summary["experiment"]["targets"])


def git(cwd: Path, *args: str) -> str:
    identity = ("-c", "user.name=Test", "-c", "user.email=test@example.com")
    done = subprocess.run(["git", *identity, *args], cwd=cwd, check=True, capture_output=True, text=True)
    return done.stdout.strip()


class TestResource:
    def test_experiment_identity(self, capture, monkeypatch):
        """The resource names the experiment: id, name, purpose, tags; plus host, Python and rank."""
        monkeypatch.setenv("RANK", "5")
        tracker = capture.tracker("ident", purpose="ablation", tags=["sac", "v2"], auto_start=True)
        resource = resource_of(capture, tracker)
        assert resource["lezea.experiment.id"] == tracker.experiment_id
        assert resource["lezea.experiment.name"] == "ident"
        assert resource["lezea.experiment.purpose"] == "ablation"
        assert list(resource["lezea.experiment.tags"]) == ["sac", "v2"]
        assert resource["host.name"] == socket.gethostname()
        assert resource["process.runtime.version"] == platform.python_version()
        assert resource["process.pid"] == os.getpid()
        assert resource["dl.rank"] == 5

    def test_no_rank_without_rank_variable(self, capture, monkeypatch):
        """Outside a distributed launch there is no dl.rank."""
        monkeypatch.delenv("RANK", raising=False)
        assert "dl.rank" not in resource_of(capture, capture.tracker("single", auto_start=True))

    def test_instance_id_is_unique_per_tracker(self, tmp_path):
        """Two trackers in one process have different service.instance.id values."""
        seen = []
        for name in ("first", "second"):
            capture = Capture(tmp_path / name)
            seen.append(resource_of(capture, capture.tracker(name, auto_start=True))["service.instance.id"])
        assert len(set(seen)) == 2 and all(seen)

    def test_every_signal_carries_the_experiment(self, capture):
        """Spans, log records and the local OTLP files all carry the experiment id."""
        tracker = capture.tracker("all-signals", auto_start=True)
        with tracker.builder_scope("1"):
            tracker.log_training_step(1, {"loss": 0.5})
        tracker.finalize_experiment()
        experiment = tracker.experiment_id
        assert {s.resource.attributes["lezea.experiment.id"] for s in capture.spans()} == {experiment}
        assert {r.resource.attributes["lezea.experiment.id"] for r in capture.logs()} == {
            tracker.experiment_id}
        assert capture.points("lezea.training.loss")[0].attributes["lezea.experiment.id"] == experiment

    def test_git_facts_inside_a_repository(self, capture, tmp_path):
        """In a git repository: commit, branch and a clean dirty flag."""
        git(tmp_path, "init", "-q", "-b", "main")
        (tmp_path / "train.py").write_text("print('hi')\n")
        git(tmp_path, "add", "train.py")
        git(tmp_path, "commit", "-q", "-m", "first")
        resource = resource_of(capture, capture.tracker("git", auto_start=True))
        assert resource["vcs.ref.head.revision"] == git(tmp_path, "rev-parse", "HEAD")
        assert resource["vcs.ref.head.name"] == "main"
        assert resource["lezea.vcs.dirty"] is False

    def test_dirty_working_tree_is_reported(self, capture, tmp_path):
        """A modified tracked file makes lezea.vcs.dirty true."""
        git(tmp_path, "init", "-q", "-b", "feature")
        (tmp_path / "train.py").write_text("print('hi')\n")
        git(tmp_path, "add", "train.py")
        git(tmp_path, "commit", "-q", "-m", "first")
        (tmp_path / "train.py").write_text("print('changed')\n")
        resource = resource_of(capture, capture.tracker("dirty", auto_start=True))
        assert resource["lezea.vcs.dirty"] is True
        assert resource["vcs.ref.head.name"] == "feature"

    def test_no_vcs_attributes_outside_a_repository(self, capture):
        """Outside a repository there are no vcs.* attributes and no error."""
        resource = resource_of(capture, capture.tracker("no-git", auto_start=True))
        assert not [k for k in resource if k.startswith(("vcs.", "lezea.vcs."))]


class TestOtlpVariables:
    """The standard OTEL_EXPORTER_OTLP_* variables, with the specification's meaning."""

    def test_timeout_is_milliseconds_and_per_signal_wins(self, capture, monkeypatch):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2500")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "200")
        options = capture.tracker("timeouts").settings.otlp_options
        assert options["traces"]["timeout"] == 0.2 and options["metrics"]["timeout"] == 2.5

    def test_a_timeout_in_milliseconds_bounds_a_slow_export(self, monkeypatch, tmp_path):
        """OTEL_EXPORTER_OTLP_TIMEOUT=300 gives up on a collector that answers after 3 s within a
        second (the SDK alone would read 300 as seconds): the attempt is counted, training untouched."""
        from lezea_otel import ExperimentTracker

        from .otlp_receiver import HttpReceiver

        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "300")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        receiver = HttpReceiver()
        receiver.delay_s = 3.0
        try:
            tracker = ExperimentTracker("timeout", runs_dir=tmp_path, endpoint=receiver.endpoint, quiet=True)
            tracker.start(prometheus_port=None)
            began = time.monotonic()
            while not tracker.get_experiment_summary()["delivery"]["signals"].get("traces", {}).get(
                    "failed_attempts"):  # (an exporter process reports every second)
                assert time.monotonic() - began < 2.5, "the export was not cut at 300 ms"
                time.sleep(0.05)
            tracker.finalize_experiment()
        finally:
            receiver.stop()

    @pytest.mark.parametrize(("variable", "value"), [
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon"),
        ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "-5"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "Authorization: Bearer s3cr3t-t0ken"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "zip"),
        ("OTEL_EXPORTER_OTLP_INSECURE", "maybe"),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/no/such/ca.pem"),
    ])
    def test_invalid_value_is_one_warning_or_raises_in_strict_mode(
            self, capture, monkeypatch, lezea_warnings, variable, value):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
        monkeypatch.setenv(variable, value)
        tracker = capture.tracker("bad-otlp")
        with pytest.raises(LezeaConfigError, match=variable):
            tracker.start(strict=True, prometheus_port=None)
        tracker.start(prometheus_port=None)
        mine = [m for m in lezea_warnings() if variable in m]
        assert len(mine) == 1, lezea_warnings()
        if variable.endswith("HEADERS"):  # headers carry credentials: never echoed
            assert "s3cr3t" not in " ".join(lezea_warnings()) and "hidden" in mine[0]
        else:
            assert repr(value) in mine[0]
        tracker.log_training_step(1, {"loss": 0.5})
        assert tracker.finalize_experiment()["steps"]["count"] == 1

    def test_every_configuration_problem_is_reported(self, capture, monkeypatch, lezea_warnings):
        monkeypatch.setenv("LEZEA_SHUTDOWN_TIMEOUT", "-1")
        monkeypatch.setenv("LEZEA_AUDIT_FSYNC", "sometimes")
        capture.tracker("two-problems").start(prometheus_port=None)
        messages = lezea_warnings()
        assert any("LEZEA_SHUTDOWN_TIMEOUT" in m for m in messages)
        assert any("LEZEA_AUDIT_FSYNC" in m for m in messages)


class TestDeclaredTable:
    """Settings, README's configuration table and `lezea-otel doctor` all come from one declared table."""

    def test_readme_table_is_the_declared_table(self):
        """README's table is what `python -m lezea_otel.config.parameters` prints: they cannot drift."""
        from lezea_otel.config.parameters import markdown_table

        readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
        marker = "`python -m lezea_otel.config.parameters`; tests/test_settings.py checks they agree -->\n"
        assert marker in readme
        shown = readme.split(marker, 1)[1].split("\n\n", 1)[0] + "\n"
        assert shown == markdown_table(), "README is stale: paste `python -m lezea_otel.config.parameters`"

    def test_every_setting_comes_from_the_table(self):
        """Each Settings field is a declared parameter or derived from them; with nothing set, each
        holds its parameter's declared default (the only place a default is written)."""
        from dataclasses import fields

        from lezea_otel.config.parameters import PARAMETERS
        from lezea_otel.config.settings import Settings, resolve_settings

        declared = {p.name: p for p in PARAMETERS if not p.per_signal}
        derived = {"otlp_signals", "otlp_endpoints", "otlp_options", "signal_values", "sdk", "exporter_fixes",
                   "problems", "sources"}
        assert {f.name for f in fields(Settings)} - derived <= set(declared)
        settings = resolve_settings({}, {})
        assert settings.problems == ()
        for name in {f.name for f in fields(Settings)} - derived:
            assert getattr(settings, name) == declared[name].setting(declared[name].default), name
        assert set(settings.sdk) == {n for n in declared if n not in {f.name for f in fields(Settings)}
                                     and not declared[n].with_otlp}

    def test_doctor_lists_values_and_sources_from_the_table(self, tmp_path):
        """`doctor` shows each setting's variables, value and where it came from, an SDK variable once set."""
        from click.testing import CliRunner

        from lezea_otel.cli import main

        env = {"LEZEA_RUNS_DIR": str(tmp_path / "r"), "LEZEA_OBSERVE_INTERVAL": "2.5",
               "OTEL_SPAN_EVENT_COUNT_LIMIT": "64", "LEZEA_PROMETHEUS_PORT": None,
               "LEZEA_CHECKPOINT_HASH_MAX_MB": "0.5"}
        result = CliRunner().invoke(main, ["doctor", "--port", "0"], env=env)
        assert result.exit_code == 0, result.output
        rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:4]]
                for line in result.output.splitlines() if line.count("│") >= 4}
        assert rows["LEZEA_OBSERVE_INTERVAL"] == ["2.5", "LEZEA_OBSERVE_INTERVAL"]
        assert rows["LEZEA_SHUTDOWN_TIMEOUT"] == ["5", "default"]
        # in the unit the variable is written in, not the one Settings holds (bytes, seconds)
        assert rows["LEZEA_CHECKPOINT_HASH_MAX_MB"] == ["0.5", "LEZEA_CHECKPOINT_HASH_MAX_MB"]
        assert rows["LEZEA_METRIC_EXPORT_INTERVAL_MS, OTEL_METRIC_EXPORT_INTERVAL"] == ["15000", "default"]
        assert rows["OTEL_SPAN_EVENT_COUNT_LIMIT"] == ["64", "OTEL_SPAN_EVENT_COUNT_LIMIT"]
        assert "OTEL_SPAN_LINK_COUNT_LIMIT" not in rows  # SDK variables at their defaults stay out of the way

    def test_doctor_fails_on_an_out_of_range_value(self, tmp_path):
        from click.testing import CliRunner

        from lezea_otel.cli import main

        env = {"LEZEA_RUNS_DIR": str(tmp_path / "r"), "LEZEA_PROGRESS_EVERY": "1e-9"}
        result = CliRunner().invoke(main, ["doctor", "--port", "0"], env=env)
        assert result.exit_code == 1
        assert "LEZEA_PROGRESS_EVERY='1e-9' is out of range" in result.output
        assert "using 0.05" in result.output


class TestSdkVariables:
    """Variables the OTel SDK reads itself are checked like ours, and never reach it unusable."""

    def test_an_sdk_limit_that_would_raise_is_one_warning_and_spans_still_record(
            self, capture, monkeypatch, lezea_warnings):
        """OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT=abc (the SDK raises on it) warns once; the default 128 is used."""
        monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "abc")
        tracker = capture.tracker("limits")
        tracker.start(prometheus_port=None)
        (message,) = lezea_warnings()
        assert "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT='abc'" in message and "using the default 128" in message
        with tracker.builder_scope("1"):
            tracker.log_training_step(1, {"loss": 0.5})
        tracker.finalize_experiment()
        assert capture.spans("experiment") and os.environ["OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT"] == "128"
        with pytest.raises(LezeaConfigError, match="OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT"):
            capture.tracker("strict-limits").start(strict=True, prometheus_port=None)  # still reported, once

    def test_a_valid_sdk_limit_is_honoured(self, capture, monkeypatch):
        """OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT=2 reaches the SDK unchanged: spans keep two attributes."""
        monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "2")
        tracker = capture.tracker("two", auto_start=True)
        tracker.finalize_experiment()
        (root,) = capture.spans("experiment")
        assert len(root.attributes) == 2

    def test_invalid_resource_attributes_keep_the_valid_pairs(self, capture, monkeypatch, lezea_warnings):
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "team=ml,broken")
        tracker = capture.tracker("attrs")
        tracker.start(prometheus_port=None)
        (message,) = lezea_warnings()
        assert "OTEL_RESOURCE_ATTRIBUTES='team=ml,broken'" in message
        assert resource_of(capture, tracker)["team"] == "ml"

    def test_an_invalid_exporter_option_is_hidden_from_the_exporters(self, monkeypatch, tmp_path,
                                                                      lezea_warnings):
        """OTEL_EXPORTER_OTLP_TRACES_COMPRESSION=zip: one warning, and the traces still reach the collector
        (the exporter read the generic variable instead, as the warning says)."""
        receiver = HttpReceiver()
        try:
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "zip")
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
            tracker = ExperimentTracker("zip", runs_dir=tmp_path, endpoint=receiver.endpoint, quiet=True)
            tracker.start(prometheus_port=None)
            tracker.finalize_experiment()
        finally:
            receiver.stop()
        (message,) = lezea_warnings()
        assert "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION='zip'" in message
        assert "using OTEL_EXPORTER_OTLP_COMPRESSION instead" in message
        assert "experiment" in {span.name for span in receiver.received.spans()}
        assert os.environ["OTEL_EXPORTER_OTLP_TRACES_COMPRESSION"] == "zip"  # hidden only while built
