"""Shared fixtures: a clean environment per test and the in-memory capture of all three signals."""

from __future__ import annotations

import logging
import os

import pytest

from lezea_otel.testing import Capture

from .stack import Prometheus

EXPORTER_UNDER_TEST = os.environ.get("LEZEA_EXPORTER")
"""``LEZEA_EXPORTER=thread pytest``: the whole suite with that exporter mode (every other variable is
cleared)."""
for _name in list(os.environ):
    if _name.startswith(("LEZEA_", "OTEL_")):
        del os.environ[_name]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    for name in list(os.environ):
        if name.startswith(("LEZEA_", "OTEL_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LEZEA_RAISE_INTERNAL", "1")  # our own bugs fail the suite
    monkeypatch.setenv("LEZEA_QUIET", "1")
    # a run whose collector is down leaves its exporter retrying for 10 s after finalize, not the default
    # 2 minutes, behind each such test (test_delivery.TestFinishInBackground runs with the default)
    monkeypatch.setenv("LEZEA_FINISH_WINDOW", "10")
    if EXPORTER_UNDER_TEST:
        monkeypatch.setenv("LEZEA_EXPORTER", EXPORTER_UNDER_TEST)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def capture(tmp_path):
    """The in-memory capture; the trackers a test left open are finalized when it ends."""
    made = Capture(tmp_path / "runs")
    yield made
    made.close()


@pytest.fixture
def lezea_warnings(caplog: pytest.LogCaptureFixture):
    """The warning messages the ``lezea_otel`` logger emitted during the test."""
    caplog.set_level(logging.WARNING, logger="lezea_otel")

    def messages() -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.name == "lezea_otel" and r.levelno >= logging.WARNING]

    return messages


@pytest.fixture
def tracker(capture):
    """A started tracker wired to ``capture``, finalized after the test."""
    started = capture.tracker("test", auto_start=True)
    yield started
    started.finalize_experiment()


@pytest.fixture
def harness():
    """Makes ``Observers`` on an in-memory reader (see test_observers_process.Harness); stops them after."""
    from .test_observers_process import Harness

    made: list[Harness] = []

    def make(**kwargs):
        made.append(Harness.make(**kwargs))
        return made[-1]

    yield make
    for h in made:
        h.observers.stop()
        h.close()


@pytest.fixture
def prometheus(tmp_path):
    """Starts a Prometheus 3 (shipped flags and prometheus.yaml) scraping the given ports every second and
    evaluating the shipped rules every second (the dashboards read the recording rules); stopped after the
    test."""
    started: list[Prometheus] = []

    def start(*target_ports: int) -> Prometheus:
        started.append(Prometheus(tmp_path / f"prometheus-{len(started)}", targets=target_ports,
                                  evaluation_interval="1s"))
        started[-1].start()
        return started[-1]

    yield start
    for server in started:
        server.stop()
