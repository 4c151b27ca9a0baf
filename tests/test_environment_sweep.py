"""The environment sweep: every variable the package reads (the declared table in
``lezea_otel.config.parameters``, the OTel SDK's own included), set to garbage, huge and tiny
values. Import works, the constructor and a short run never raise, finalize returns within a
bound, no thread spins, each unusable value is exactly one warning naming the variable, and
``strict=True`` raises ``LezeaConfigError`` at ``start()``.

Each variable alone is checked in-process against the settings (what ``start()`` warns, one
warning per problem); every variable at once, per value, in a subprocess, where import time matters.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from lezea_otel.config.parameters import BY_NAME, PARAMETERS, variables
from lezea_otel.config.parsers import Number
from lezea_otel.config.settings import resolve_settings

from .otlp_receiver import HttpReceiver

VALUES = ("abc", "", "-1", "nan", "inf", "1e308", "1e-9")
VARIABLES = variables()
TEXT = {"LEZEA_RUNS_DIR", "LEZEA_SERVICE_NAME", "OTEL_SERVICE_NAME", "LEZEA_PROMETHEUS_ADDR",
        *(v for name in ("launch_id", "slurm_job", "slurm_step", "slurm_array", "slurm_array_task",
                         "parent_run") for v in BY_NAME[name].variables_for())}
"""Free text: every value is usable (a run folder called ``nan`` is a folder, ``abc`` a launcher's job id)."""
IDENTIFIERS = {"LEZEA_EXPERIMENT_ID"}
"""Folder-safe ids: ``-1`` does not start with a letter or digit; the other values are ids."""
NAMES = {"LEZEA_ENV_ALLOWLIST"}
"""Variable names: ``abc``, ``nan`` and ``inf`` are names; ``-1``, ``1e308`` and ``1e-9`` are not."""
TINY_IS_FINE = {"LEZEA_COST_LIMIT_EUR", "LEZEA_CHECKPOINT_HASH_MAX_MB", "OTEL_TRACES_SAMPLER_ARG",
                "LEZEA_SPAN_RANKS", "LEZEA_FINISH_WINDOW"}
"""A positive number with no lower bound: 1e-9 is a (silly but harmless) value (a finish window that
short is one of 0: nothing goes on after finalize). Every interval, delay and timeout has a lower bound,
so 1e-9 there is one warning and the bound is used."""
WITH_OTLP = {v for p in PARAMETERS if p.with_otlp for v in p.variables_for()}
ENDPOINTS = {v for name in ("endpoint", "otel_endpoint", "signal_endpoint")
             for v in BY_NAME[name].variables_for()}
FINALIZE_BOUND_S = 15.0
BUSY_CPU_SHARE = 0.5


def warns(variable: str, value: str) -> bool:
    """Whether ``variable=value`` on its own must be reported (written out, not derived from the parsers)."""
    if value == "" or variable in TEXT:
        return False  # empty is unset
    if variable in NAMES:
        return value in ("-1", "1e308", "1e-9")
    if variable in IDENTIFIERS:
        return value == "-1"
    return not (value == "1e-9" and variable in TINY_IS_FINE)


def own_problems(problems: tuple[str, ...], variable: str) -> list[str]:
    return [p for p in problems if p.startswith(f"{variable}=")]


TRACE_READS = r'''
import json, os, sys
read = set()
class Tracking(dict):  # in place of os.environ before anything is imported: every read is seen
    def __getitem__(self, key):
        read.add(key)
        return dict.__getitem__(self, key)
    def get(self, key, default=None):
        read.add(key)
        return dict.get(self, key, default)
    def __contains__(self, key):
        read.add(key)
        return dict.__contains__(self, key)
os.environ = Tracking(os.environ)
from lezea_otel import ExperimentTracker
for endpoint, protocol in ((sys.argv[2], "http/protobuf"), ("http://127.0.0.1:9", "grpc")):
    tracker = ExperimentTracker("reads", runs_dir=sys.argv[1], quiet=True, endpoint=endpoint,
                                protocol=protocol)
    tracker.start(prometheus_port=None)
    with tracker.builder_scope("b1"):
        tracker.log_training_step(1, {"loss": 0.5})
    tracker.finalize_experiment()
print(json.dumps(sorted(read)))
'''
NOT_SETTINGS = {"LEZEA_RAISE_INTERNAL"}  # the test suite's switch, read on every internal error


def test_the_table_lists_every_variable_read(tmp_path):
    """Every OTEL_*/LEZEA_* variable (and RANK, WORLD_SIZE, TRACEPARENT) that is read while a run
    starts, sends over HTTP or gRPC and ends, by us or by the SDK objects we build, is declared."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("LEZEA_", "OTEL_"))}
    environment["LEZEA_SHUTDOWN_TIMEOUT"] = "0.2"  # the gRPC collector is not there: do not wait for it
    environment["LEZEA_EXPORTER"] = "thread"  # the SDK objects in the traced process, not in a child
    receiver = HttpReceiver()
    try:
        done = subprocess.run([sys.executable, "-c", TRACE_READS, str(tmp_path / "runs"), receiver.endpoint],
                              env=environment, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    finally:
        receiver.stop()
    assert done.returncode == 0, done.stderr[-3000:]
    read = set(json.loads(done.stdout.strip().splitlines()[-1]))
    ours = {v for v in read if v.startswith(("LEZEA_", "OTEL_")) or v in ("RANK", "LOCAL_RANK", "WORLD_SIZE",
                                                                          "TRACEPARENT")}
    assert ours - NOT_SETTINGS - set(VARIABLES) == set()
    assert {"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "OTEL_RESOURCE_ATTRIBUTES", "RANK"} <= ours  # it sees reads
    assert len(VARIABLES) == len(set(VARIABLES))


@pytest.mark.parametrize("variable", VARIABLES)
def test_each_variable_alone(variable):
    """Each value is at most one problem, naming the variable and the value, and what was used
    instead lies within the declared bounds (intervals cannot spin, timeouts cannot overflow)."""
    base = {} if variable in ENDPOINTS else {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    for value in VALUES:
        settings = resolve_settings({}, {**base, variable: value})
        mine = own_problems(settings.problems, variable)
        assert len(mine) == int(warns(variable, value)), (value, settings.problems)
        assert len(settings.problems) == len(mine), (value, settings.problems)  # nothing else is blamed
        if mine:  # headers carry credentials: never echoed
            named = "hidden" if "HEADERS" in variable else repr(value)
            assert named in mine[0] and "using" in mine[0], mine
        assert 0.05 <= settings.progress_after_s <= 86_400 and 0.05 <= settings.progress_every_s <= 86_400
        assert 0.1 <= settings.observe_interval_s <= 86_400 and 0.01 <= settings.shutdown_timeout_s <= 86_400
        assert 50 <= settings.metric_export_interval_ms <= 86_400_000
        for signal in ("traces", "logs"):
            queue = settings.export_queue(signal)
            assert 10 <= queue["schedule_delay_ms"] <= 86_400_000
            assert 1 <= queue["max_export_batch_size"] <= 1_000_000
            assert 1 <= queue["max_queue_size"] <= 1_000_000
        for options in settings.otlp_options.values():
            assert 0.1 <= options["timeout"] <= 86_400
        assert 1 <= settings.max_metric_names <= 100_000 and settings.checkpoint_hash_max_bytes <= 2**40


CLAMPED = [p for p in PARAMETERS if isinstance(p.parse, Number) and p.parse.clamp]


@pytest.mark.parametrize("parameter", CLAMPED, ids=lambda p: p.variables[0])
def test_out_of_range_numbers_are_clamped_and_named(parameter):
    """1e308 becomes the upper bound (a day, for intervals and timeouts), named in the warning."""
    variable = parameter.variables_for("traces")[0]
    base = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    settings = resolve_settings({}, {**base, variable: "1e308"})
    (problem,) = own_problems(settings.problems, variable)
    high = parameter.parse.high
    used = int(high) if parameter.parse.integer else float(high)
    assert "out of range" in problem and f"using {used!r}" in problem


def test_ranks_must_be_below_the_world_size():
    """RANK=5 with WORLD_SIZE=4 records no rank (one problem); rank 3 of 4 is fine."""
    settings = resolve_settings({}, {"RANK": "5", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert settings.rank is None and settings.world_size == 4 and settings.local_rank == 1
    (problem,) = settings.problems
    assert problem.startswith("RANK='5'") and "WORLD_SIZE='4'" in problem
    fine = resolve_settings({}, {"RANK": "3", "WORLD_SIZE": "4"})
    assert (fine.rank, fine.local_rank, fine.world_size, fine.problems) == (3, None, 4, ())


@pytest.mark.parametrize(("value", "valid"), [
    ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", True),
    ("00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", False),  # upper case is not W3C
    ("00-00000000000000000000000000000000-b7ad6b7169203331-01", False),  # all-zero trace id
    ("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", False),  # all-zero span id
    ("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", False),  # version ff is forbidden
    ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra", False),
    ("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra", True),  # a later version may add
])
def test_traceparent_is_w3c(value, valid):
    settings = resolve_settings({}, {"TRACEPARENT": value})
    assert (settings.traceparent == value) is valid and bool(settings.problems) is not valid


def test_resource_attributes_keep_their_valid_pairs():
    """OTEL_RESOURCE_ATTRIBUTES with one broken item: one problem, the other pairs are kept."""
    settings = resolve_settings({}, {"OTEL_RESOURCE_ATTRIBUTES": "team=ml,broken,site=lab"})
    (problem,) = settings.problems
    assert "'broken'" in problem and "using 'team=ml,site=lab'" in problem
    assert settings.sdk["otel_resource_attributes"] == "team=ml,site=lab"


CHILD = r'''
import json, logging, os, sys, time
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append(record.getMessage())
logging.getLogger("lezea_otel").addHandler(Keep())
logging.getLogger("lezea_otel").setLevel(logging.WARNING)
out = {}
began = time.monotonic()
from lezea_otel import ExperimentTracker, LezeaConfigError
out["import_s"] = time.monotonic() - began

def run(name, idle_s):
    del records[:]
    tracker = ExperimentTracker(name, runs_dir=sys.argv[1], quiet=True)
    tracker.start(prometheus_port=None)
    cpu, wall = time.process_time(), time.monotonic()
    time.sleep(idle_s)  # a window to measure the idle CPU in, not a synchronisation
    share = (time.process_time() - cpu) / (time.monotonic() - wall)
    with tracker.builder_scope("b1"):
        with tracker.span("forward"):
            tracker.log_training_step(1, {"loss": 0.5})
    began = time.monotonic()
    summary = tracker.finalize_experiment()
    lines = [json.loads(line) for line in tracker.audit_path.read_text().splitlines()]
    return {"warnings": list(records), "finalize_s": time.monotonic() - began, "cpu_share": share,
            "steps": summary["steps"]["count"], "status": summary["status"],
            "kinds": [e["kind"] for e in lines], "delivery": summary["delivery"]}

out["local"] = run("local", 0.0)
os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = sys.argv[2]  # a live collector: the OTLP options are used
out["otlp"] = run("otlp", 0.3)  # every thread of the local run, and the exporters'
strict = ExperimentTracker("strict", runs_dir=sys.argv[1], quiet=True)
try:
    strict.start(strict=True, prometheus_port=None)
    out["strict"] = None
except LezeaConfigError as error:
    out["strict"] = str(error)
strict.finalize_experiment()
print(json.dumps(out))
'''


CHILD_ARGUMENTS = {"runs_dir", "quiet"}  # given to the constructor there: they beat the variables


def checked(otlp: bool, value: str) -> set[str]:
    """With every variable set to ``value``: the variables read, per parameter (and signal) in
    precedence order, up to the first one used. For ours that is the first set (an unusable one
    means the default); the exporters' variables are tried in turn, as the exporters would."""
    read: set[str] = set()
    for parameter in PARAMETERS:
        if (parameter.with_otlp and not otlp) or parameter.name in CHILD_ARGUMENTS:
            continue
        for signal in ("traces", "metrics", "logs") if parameter.per_signal else (None,):
            chain = [v for v in parameter.variables_for(signal)
                     if not (otlp and v == "OTEL_EXPORTER_OTLP_ENDPOINT")]  # the child's collector
            clamped = parameter in CLAMPED and value in ("1e308", "1e-9")
            for variable in chain if value else ():
                read.add(variable)
                if parameter.reader != "exporter" or not warns(variable, value) or clamped:
                    break
    return read


@pytest.mark.parametrize("value", VALUES)
def test_every_variable_at_once_in_a_fresh_process(value, tmp_path):
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("LEZEA_", "OTEL_"))}
    environment.update({variable: value for variable in VARIABLES}, LEZEA_RAISE_INTERNAL="1")
    receiver = HttpReceiver()
    try:
        done = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "runs"), receiver.endpoint],
                              env=environment, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    finally:
        receiver.stop()
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]  # not even one the SDK logs and survives
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    delivery = out["otlp"]["delivery"]  # the unusable options were not used: it was sent, or is left to send
    sent = bool(receiver.received.spans())  # the root's name depends on the launch variables set
    left = delivery["signals"].get("traces", {}).get("left_in_audit")
    assert sent or left or delivery["problems"], delivery
    for mode in ("local", "otlp"):
        run = out[mode]
        assert run["status"] == "finished" and run["steps"] == 1 and run["kinds"][-1] == "experiment_end"
        assert run["finalize_s"] < FINALIZE_BOUND_S, run
        assert mode == "local" or run["cpu_share"] < BUSY_CPU_SHARE, run  # no thread spins on a tiny interval
        assert not [w for w in run["warnings"] if "could not" in w], run["warnings"]  # the run started fully
        problems = [w for w in run["warnings"] if "configuration problem" in w]
        expected = {v for v in checked(mode == "otlp", value) if warns(v, value)}
        for variable in VARIABLES:
            named = [w for w in problems if f"problem: {variable}=" in w]
            assert len(named) == int(variable in expected), (mode, variable, named)
        assert len(problems) == len(expected), problems
    if expected:  # the strict tracker sees what the OTLP run saw
        assert out["strict"] is not None
        assert all(f"{variable}=" in out["strict"] for variable in expected), out["strict"]
    else:
        assert out["strict"] is None
