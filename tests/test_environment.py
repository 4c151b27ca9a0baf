"""The environment recorded at start(), and secrets that must never leave the process."""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
import pytest

import lezea_otel
from lezea_otel import ExperimentTracker
from lezea_otel.testing import Capture

GITHUB_TOKEN = "ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxx"
AWS_SECRET = "wJalrXUtnFEMIK7MDENGbPxRfiCYzEXAMPLEKEY"
CLI_API_KEY = "sk-abcdefghijklmnopqrstuv"
CLI_PASSWORD = "hunter2"
HYPER_SECRET = "secret123"
GIT_TOKEN = "tok3n"
SECRETS = (GITHUB_TOKEN, AWS_SECRET, CLI_API_KEY, CLI_PASSWORD, HYPER_SECRET, GIT_TOKEN)


@pytest.fixture(autouse=True)
def _no_default_prometheus_port(monkeypatch):
    monkeypatch.setenv("LEZEA_PROMETHEUS_PORT", "0")


def installed(package: str) -> bool:
    try:
        metadata.version(package)
    except metadata.PackageNotFoundError:
        return False
    return True


def environment_event(tracker: ExperimentTracker) -> dict[str, Any]:
    events = [json.loads(line) for line in tracker.audit_path.read_text().splitlines()]
    (event,) = [e for e in events if e["kind"] == "environment"]
    return event["data"]


def everything_recorded(tracker: ExperimentTracker, capture: Capture, caplog: pytest.LogCaptureFixture,
                        stderr: str) -> str:
    """All text the run produced: audit, OTLP files, exported spans/logs/metrics, log lines, console."""
    parts = [tracker.audit_path.read_text(), stderr, caplog.text]
    parts += [path.read_text() for path in sorted((tracker.run_dir / "otlp").glob("*.jsonl"))]
    for span in capture.spans():
        parts.append(repr(dict(span.attributes or {})))
        parts.append(repr(dict(span.resource.attributes)))
        parts.append(repr([(e.name, dict(e.attributes or {})) for e in span.events]))
    for record in capture.logs():
        parts.append(repr(record.log_record.body))
        parts.append(repr(dict(record.log_record.attributes or {})))
        parts.append(repr(dict(record.resource.attributes)))
    parts.append(repr(capture.collect()))
    parts.append(json.dumps(tracker.get_experiment_summary(), default=repr))
    parts.append(json.dumps(tracker.get_experiment_data(), default=repr))
    return "\n".join(parts)


class TestEnvironmentEvent:
    def test_environment_describes_the_machine(self, capture):
        """The environment event has the Python version, platform, CPU count, memory and package versions."""
        tracker = capture.tracker("env", auto_start=True)
        tracker.finalize_experiment()
        env = environment_event(tracker)
        assert env["python"]["version"] == platform.python_version()
        assert env["python"]["implementation"] == platform.python_implementation()
        assert env["platform"]["system"] == platform.system()
        assert env["platform"]["machine"] == platform.machine()
        assert env["cpu"]["logical"] == os.cpu_count()
        assert env["memory_bytes"] == psutil.virtual_memory().total
        assert env["packages"]["lezea_otel"] == lezea_otel.__version__
        assert env["packages"]["opentelemetry-sdk"]
        for name in ("torch", "jax", "tensorflow"):  # recorded exactly when installed; absent is not an error
            assert (name in env["packages"]) == installed(name), name
        assert isinstance(env["gpus"], list)

    def test_environment_is_a_log_event_too(self, capture):
        """The same facts go out as the lezea.environment log record."""
        tracker = capture.tracker("env-log", auto_start=True)
        tracker.finalize_experiment()
        (record,) = capture.logs("lezea.environment")
        attrs = dict(record.log_record.attributes)
        assert attrs["lezea.environment.python.version"] == platform.python_version()
        assert attrs["lezea.experiment.id"] == tracker.experiment_id

    def test_allow_listed_variable_appears(self, capture, monkeypatch):
        """CUDA_VISIBLE_DEVICES is recorded; a variable nobody allow-listed is not."""
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,3")
        monkeypatch.setenv("MY_DATASET_ROOT", "/data/imagenet")
        tracker = capture.tracker("cuda", auto_start=True)
        tracker.finalize_experiment()
        env = environment_event(tracker)["env"]
        assert env["CUDA_VISIBLE_DEVICES"] == "1,3"
        assert "MY_DATASET_ROOT" not in env
        assert "/data/imagenet" not in tracker.audit_path.read_text()

    def test_lezea_env_allowlist_adds_variables(self, capture, monkeypatch):
        """LEZEA_ENV_ALLOWLIST=A,B records those variables too."""
        monkeypatch.setenv("MY_DATASET_ROOT", "/data/imagenet")
        monkeypatch.setenv("EXPERIMENT_GROUP", "ablations")
        monkeypatch.setenv("LEZEA_ENV_ALLOWLIST", "MY_DATASET_ROOT, EXPERIMENT_GROUP")
        tracker = capture.tracker("allow", auto_start=True)
        tracker.finalize_experiment()
        env = environment_event(tracker)["env"]
        assert env["MY_DATASET_ROOT"] == "/data/imagenet"
        assert env["EXPERIMENT_GROUP"] == "ablations"

    def test_allow_listing_a_secret_still_redacts_it(self, capture, monkeypatch):
        """Allow-listed variables with secret names or token-shaped values are recorded redacted."""
        monkeypatch.setenv("MY_API_TOKEN", GITHUB_TOKEN)
        monkeypatch.setenv("BUILD_NOTE", f"pushed with {GITHUB_TOKEN}")
        monkeypatch.setenv("LEZEA_ENV_ALLOWLIST", "MY_API_TOKEN,BUILD_NOTE")
        tracker = capture.tracker("allow-secret", auto_start=True)
        tracker.finalize_experiment()
        env = environment_event(tracker)["env"]
        assert env["MY_API_TOKEN"] == "***"
        assert env["BUILD_NOTE"].startswith("pushed with ") and GITHUB_TOKEN not in env["BUILD_NOTE"]
        assert GITHUB_TOKEN not in tracker.audit_path.read_text()

    def test_argv_is_recorded(self, capture, monkeypatch):
        """Command-line options that are not secret are recorded as given."""
        monkeypatch.setattr(sys, "argv", ["train.py", "--lr", "0.001", "--epochs=3"])
        tracker = capture.tracker("argv", auto_start=True)
        tracker.finalize_experiment()
        assert environment_event(tracker)["argv"] == ["train.py", "--lr", "0.001", "--epochs=3"]


def _repo_with_secret_remote(folder: Path) -> None:
    def git(*args: str) -> None:
        identity = ("-c", "user.name=Test", "-c", "user.email=test@example.com")
        subprocess.run(["git", *identity, *args], cwd=folder, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    (folder / "train.py").write_text("print('train')\n")
    git("add", "train.py")
    git("commit", "-q", "-m", "first")
    git("remote", "add", "origin", f"https://user:{GIT_TOKEN}@github.com/x/y.git")


class TestSecretsNeverLeak:
    def test_no_secret_reaches_any_output(self, capture, monkeypatch, tmp_path, caplog, capsys):
        """Tokens in env, argv, hyperparameters and a git remote appear nowhere the run writes or sends."""
        caplog.set_level(logging.DEBUG)
        monkeypatch.delenv("LEZEA_QUIET")  # the console line is an output too
        monkeypatch.setenv("MY_API_TOKEN", GITHUB_TOKEN)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
        monkeypatch.setattr(sys, "argv", ["train.py", f"--api-key={CLI_API_KEY}", "--password", CLI_PASSWORD,
                                          "--lr", "0.1", GITHUB_TOKEN])
        _repo_with_secret_remote(tmp_path)
        tracker = capture.tracker("secrets", quiet=False, auto_start=True)
        tracker.log_lezea_config(8, 2, "SAC", hyperparameters={"wandb_api_key": HYPER_SECRET, "lr": 0.1},
                                 seeds={"global": 1})
        tracker.log_training_step(1, {"loss": 0.5})
        tracker.finalize_experiment()
        text = everything_recorded(tracker, capture, caplog, capsys.readouterr().err)
        leaked = [secret for secret in SECRETS if secret in text]
        assert leaked == []
        # ...and the test is not vacuous: the things around the secrets were recorded.
        env = environment_event(tracker)
        assert env["argv"][:5] == ["train.py", "--api-key=***", "--password", "***", "--lr"]
        assert env["env"]["CUDA_VISIBLE_DEVICES"] == "0"
        assert env["git"]["remote"] == "https://github.com/x/y.git"
        lines = tracker.audit_path.read_text().splitlines()
        config = [json.loads(x) for x in lines if '"kind":"config"' in x][0]
        assert config["data"]["hyperparameters"] == {"wandb_api_key": "***", "lr": 0.1}
        root = capture.spans("experiment")[0]
        assert root.attributes["lezea.config.hyperparameters.lr"] == 0.1
        assert root.resource.attributes["vcs.repository.url.full"] == "https://github.com/x/y.git"
        assert "lezea_otel: experiment 'secrets'" in text  # the console line was captured

    def test_secrets_in_checkpoint_and_dataset_metadata_are_redacted(self, capture, tmp_path):
        """Secret-named keys in checkpoint/dataset metadata are redacted in the audit and the log events."""
        checkpoint = tmp_path / "ckpt.pt"
        checkpoint.write_bytes(b"weights")
        tracker = capture.tracker("meta", auto_start=True)
        tracker.log_checkpoint(str(checkpoint), step=1, metadata={"hf_token": HYPER_SECRET, "epoch": 1})
        tracker.log_dataset_version("data", "v1", metadata={"password": CLI_PASSWORD, "rows": 10})
        tracker.finalize_experiment()
        audit = tracker.audit_path.read_text()
        logs = repr([dict(r.log_record.attributes) for r in capture.logs()])
        assert HYPER_SECRET not in audit + logs and CLI_PASSWORD not in audit + logs
        assert '"epoch":1' in audit and '"rows":10' in audit


def root_resource(capture: Capture, tracker: ExperimentTracker) -> dict[str, Any]:
    tracker.finalize_experiment()
    (root,) = capture.spans("experiment")
    return dict(root.resource.attributes)


class TestDistributedLaunch:
    """RANK, LOCAL_RANK and WORLD_SIZE as a launcher sets them, and as a broken one might."""

    def test_ranks_reach_the_resource(self, capture, monkeypatch):
        for variable, value in (("RANK", "3"), ("LOCAL_RANK", "1"), ("WORLD_SIZE", "8")):
            monkeypatch.setenv(variable, value)
        resource = root_resource(capture, capture.tracker("ranked", auto_start=True))
        assert (resource["dl.rank"], resource["dl.local_rank"], resource["dl.world_size"]) == (3, 1, 8)

    @pytest.mark.parametrize(("environ", "variable", "kept"), [
        ({"RANK": "abc"}, "RANK", {}),
        ({"RANK": "-1", "WORLD_SIZE": "4"}, "RANK", {"dl.world_size": 4, "dl.launcher": "torchrun"}),
        ({"RANK": "5", "WORLD_SIZE": "4"}, "RANK", {"dl.world_size": 4, "dl.launcher": "torchrun"}),
        ({"LOCAL_RANK": "2", "WORLD_SIZE": "0"}, "WORLD_SIZE", {"dl.local_rank": 2}),
    ])
    def test_an_impossible_rank_is_one_warning_and_not_recorded(self, capture, monkeypatch, lezea_warnings,
                                                                 environ, variable, kept):
        """A rank that is not a whole number below the world size: one warning naming it, no rank attribute
        (the launcher, known from the world size, is still said)."""
        for name, value in environ.items():
            monkeypatch.setenv(name, value)
        tracker = capture.tracker("broken-launch")
        tracker.start(prometheus_port=None)
        (message,) = lezea_warnings()
        assert message.startswith(f"start: configuration problem: {variable}={environ[variable]!r}")
        resource = root_resource(capture, tracker)
        assert {k: v for k, v in resource.items() if k.startswith("dl.")} == kept

    def test_a_malformed_traceparent_is_one_warning(self, capture, monkeypatch, lezea_warnings):
        monkeypatch.setenv("TRACEPARENT", "00-not-a-trace-01")
        tracker = capture.tracker("ci-job")
        tracker.start(prometheus_port=None)
        (message,) = lezea_warnings()
        assert "TRACEPARENT='00-not-a-trace-01'" in message and "W3C" in message
        assert tracker.settings.traceparent is None
        tracker.finalize_experiment()

    def test_a_constructor_argument_with_a_nul_byte_is_one_warning(self, tmp_path, monkeypatch,
                                                                    lezea_warnings):
        """runs_dir containing NUL cannot be a folder: warned at start(), the run goes to ./runs."""
        monkeypatch.chdir(tmp_path)
        tracker = ExperimentTracker("nul", runs_dir="runs\x00x", quiet=True)
        tracker.start(prometheus_port=None)
        assert any("argument runs_dir=" in m and "NUL" in m for m in lezea_warnings())
        tracker.finalize_experiment()
        assert tracker.audit_path.resolve().is_relative_to((tmp_path / "runs").resolve())


class TestNonUtf8Variables:
    def test_variables_read_from_non_utf8_bytes_still_go_out(self, monkeypatch, tmp_path, lezea_warnings):
        """A service name and resource attributes set from Latin-1 bytes: one warning each, the bad
        bytes replaced, and every span still reaches the collector (none kills an export)."""
        from .otlp_receiver import HttpReceiver

        monkeypatch.setenv("LEZEA_SERVICE_NAME", os.fsdecode(b"caf\xe9"))
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", os.fsdecode(b"site=k\xf6ln"))
        receiver = HttpReceiver()
        try:
            tracker = ExperimentTracker("latin1", runs_dir=tmp_path, endpoint=receiver.endpoint, quiet=True)
            tracker.start(prometheus_port=None)
            tracker.log_training_step(1, {"loss": 0.5})
            tracker.finalize_experiment()
        finally:
            receiver.stop()
        messages = lezea_warnings()
        assert len(messages) == 2 and all("is not valid UTF-8" in m for m in messages), messages
        resources = receiver.received.resources("traces")
        assert resources
        assert all(r["service.name"] == "caf\ufffd" and r["site"] == "k\ufffdln" for r in resources)
        assert "experiment" in {span.name for span in receiver.received.spans()}
