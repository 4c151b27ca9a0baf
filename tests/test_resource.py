"""Settings precedence across sources, signal selection by endpoint variables, resource identity and git
facts."""

from __future__ import annotations

import socket
import subprocess

import pytest

from lezea_otel import ExperimentTracker


def root_resource(capture, tracker: ExperimentTracker) -> dict:
    tracker.finalize_experiment()
    return dict(capture.spans("experiment")[0].resource.attributes)


class TestPrecedence:
    def test_argument_beats_lezea_beats_otel(self, capture, monkeypatch, tmp_path):
        """runs_dir argument > LEZEA_RUNS_DIR; LEZEA_SERVICE_NAME > OTEL_SERVICE_NAME > 'lezea'."""
        monkeypatch.setenv("LEZEA_RUNS_DIR", str(tmp_path / "from-env"))
        monkeypatch.setenv("OTEL_SERVICE_NAME", "otel-name")
        env_tracker = ExperimentTracker("env", quiet=True)
        assert env_tracker.run_dir.parent == tmp_path / "from-env"
        assert env_tracker.settings.service_name == "otel-name"
        arg_tracker = ExperimentTracker("arg", runs_dir=tmp_path / "from-arg", quiet=True)
        assert arg_tracker.run_dir.parent == tmp_path / "from-arg"
        monkeypatch.setenv("LEZEA_SERVICE_NAME", "lezea-name")
        assert ExperimentTracker("x", quiet=True).settings.service_name == "lezea-name"
        assert ExperimentTracker("x", quiet=True, service_name="arg-name").settings.service_name == "arg-name"

    def test_service_name_default_and_otel_variable(self, capture, monkeypatch):
        """service.name is 'lezea' when nothing names the service."""
        assert root_resource(capture, capture.tracker("a", auto_start=True))["service.name"] == "lezea"

    def test_otel_service_name_reaches_the_resource(self, capture, monkeypatch):
        """OTEL_SERVICE_NAME becomes service.name on every signal."""
        monkeypatch.setenv("OTEL_SERVICE_NAME", "trainer")
        assert root_resource(capture, capture.tracker("b", auto_start=True))["service.name"] == "trainer"

    def test_endpoint_variables_choose_signals(self, monkeypatch):
        """No endpoint = local; the generic endpoint sends all; OTEL_TRACES_EXPORTER=none drops traces."""
        assert ExperimentTracker("l", quiet=True).settings.local_only
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        assert ExperimentTracker("g", quiet=True).settings.otlp_signals == {"traces", "metrics", "logs"}
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
        assert ExperimentTracker("n", quiet=True).settings.otlp_signals == {"metrics", "logs"}
        monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://127.0.0.1:4318/v1/metrics")
        assert ExperimentTracker("m", quiet=True).settings.otlp_signals == {"metrics"}

    @pytest.mark.parametrize(("variable", "value", "field", "default"), [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "bogus", "protocol", "http/protobuf"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "abc", "metric_export_interval_ms", 15_000.0),
        ("LEZEA_SHUTDOWN_TIMEOUT", "0", "shutdown_timeout_s", 5.0),
        ("LEZEA_MAX_METRIC_NAMES", "2.5", "max_metric_names", 256),
        ("LEZEA_STRICT", "perhaps", "strict", False),
    ])
    def test_invalid_values_warn_at_start(self, capture, monkeypatch, lezea_warnings, variable, value, field,
                                          default):
        """An unusable value is named (variable and value) once at start(), and the default is used."""
        monkeypatch.setenv(variable, value)
        tracker = capture.tracker("bad")
        assert lezea_warnings() == []  # construction stays quiet
        tracker.start(prometheus_port=None)
        (message,) = lezea_warnings()
        assert f"{variable}={value!r}" in message
        assert getattr(tracker.settings, field) == default
        tracker.finalize_experiment()


class TestResource:
    def test_identity_attributes(self, capture, monkeypatch):
        """Every run has its own instance id, experiment identity, host, Python and rank."""
        monkeypatch.setenv("RANK", "3")
        monkeypatch.setenv("WORLD_SIZE", "8")
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=lab")
        tracker = capture.tracker("ident", purpose="why", tags=["x"], auto_start=True)
        resource = root_resource(capture, tracker)
        assert resource["lezea.experiment.id"] == tracker.experiment_id
        assert resource["lezea.experiment.name"] == "ident" and resource["lezea.experiment.purpose"] == "why"
        assert resource["dl.rank"] == 3 and resource["dl.world_size"] == 8
        assert resource["deployment.environment.name"] == "lab"
        assert resource["host.name"] == socket.gethostname()
        assert resource["process.runtime.version"].count(".") == 2
        assert "vcs.ref.head.revision" not in resource  # cwd is a fresh tmp folder, no repository

    def test_instance_id_is_unique_per_tracker(self, tmp_path):
        """Two trackers in one process never share service.instance.id (no colliding series)."""
        from lezea_otel.testing import Capture

        ids = set()
        for name in ("a", "b"):
            capture = Capture(tmp_path / name)
            ids.add(root_resource(capture, capture.tracker(name, auto_start=True))["service.instance.id"])
        assert len(ids) == 2

    def test_git_facts_without_credentials(self, capture, tmp_path):
        """Inside a repository: commit, branch, dirty flag, and the remote URL without its token."""
        def git(*args: str) -> str:
            return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True,
                                  text=True).stdout

        git("init", "-q", "-b", "main")
        git("-c", "user.email=a@b", "-c", "user.name=n", "commit", "-q", "--allow-empty", "-m", "first")
        git("remote", "add", "origin", "https://user:s3cr3t-t0ken@example.com/org/repo.git")
        (tmp_path / "tracked.txt").write_text("x")
        git("add", "tracked.txt")
        resource = root_resource(capture, capture.tracker("git", auto_start=True))
        assert resource["vcs.ref.head.revision"] == git("rev-parse", "HEAD").strip()
        assert resource["vcs.ref.head.name"] == "main"
        assert resource["lezea.vcs.dirty"] is True
        assert resource["vcs.repository.url.full"] == "https://example.com/org/repo.git"
