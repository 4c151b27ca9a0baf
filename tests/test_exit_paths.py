"""Every way out ends the run with the right status, and nothing written is lost.

SIGTERM at random moments (inside calls, scope exits, finalize), finalize from another thread and
from the user's own signal handler, a pool's ``terminate()``, a full disk. The signal runs happen
in real processes: one child per scenario imports lezea_otel once and forks a fresh process per
seed, which sets its own random moment (a seeded delay on a timer thread) and reports what it did
through shared memory; the test then reads that process's audit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

import lezea_otel

SEEDS = 20

# The child: `scenario(tracker, rng, done)` runs in a process forked per seed; `done` is a shared
# array: [0] the last step whose call returned, [1] 1 when the scenario came to its end by itself.
CHILD = r'''
import atexit, ctypes, json, mmap, os, random, signal, sys, threading
from lezea_otel import ExperimentTracker

runs, seeds = sys.argv[1], [int(s) for s in sys.argv[2].split(",")]
# Ctrl-C as in a program started from a terminal: a background job (`cmd &`, nohup, some CI runners)
# inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler at all.
signal.signal(signal.SIGINT, signal.default_int_handler)
shared = mmap.mmap(-1, 16)
done = (ctypes.c_int64 * 2).from_buffer(shared)

def busy(rng):
    """The user's own work between calls, so that a signal lands there too."""
    return sum(range(rng.randrange(0, 400)))

def later(delay, action, *args):
    timer = threading.Timer(delay, action, args)
    timer.daemon = True
    timer.start()

ASYNC_MODE = False
SCENARIO

for seed in seeds:
    done[0] = done[1] = 0
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            rng = random.Random(seed)
            tracker = ExperimentTracker("exit", runs_dir=os.path.join(runs, str(seed)), quiet=True,
                                        async_mode=ASYNC_MODE)
            tracker.start(prometheus_port=None)
            scenario(tracker, rng, done)
            status = 0
        except SystemExit as exit:
            status = exit.code
        except BaseException:  # as an uncaught exception ends a program: the hook, then the exit handlers
            sys.excepthook(*sys.exc_info())
        finally:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            os._exit(status)
    _, code = os.waitpid(pid, 0)
    result = -os.WTERMSIG(code) if os.WIFSIGNALED(code) else os.WEXITSTATUS(code)
    print(json.dumps({"seed": seed, "rc": result, "last_step": done[0], "finished": done[1]}), flush=True)
'''


def _env() -> dict[str, str]:
    """The children run the lezea_otel this test imported (whatever their working folder), as a user
    would: internal errors are reported, not raised."""
    env = {k: v for k, v in os.environ.items() if k != "LEZEA_RAISE_INTERNAL"}
    env.update(LEZEA_PROMETHEUS_PORT="0", LEZEA_QUIET="1", LEZEA_SHUTDOWN_TIMEOUT="2",
               PYTHONPATH=os.pathsep.join([str(Path(lezea_otel.__file__).parents[1]),
                                           env.get("PYTHONPATH", "")]))
    return env


def _start(scenario: str, runs: Path, seeds=range(SEEDS)) -> subprocess.Popen[str]:
    script = CHILD.replace("SCENARIO", textwrap.dedent(scenario))
    return subprocess.Popen([sys.executable, "-c", script, str(runs), ",".join(map(str, seeds))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                            start_new_session=True)


def _results(proc: subprocess.Popen[str]) -> tuple[list[dict], str]:
    """What the child reported per seed, and its stderr (where a run's internal errors would be)."""
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the child and the process it forked for the seed
        out, err = proc.communicate()
        pytest.fail(f"a run did not end: {err[-3000:]}")
    assert proc.returncode == 0, err
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")], err


def _no_errors(stderr: str) -> None:
    assert "internal error" not in stderr and "Traceback" not in stderr, stderr[-3000:]


def _audit(run_dir: Path) -> list[dict]:
    """Every line of the run's audit, each of which must parse, numbered 1..N without a gap."""
    (audit,) = run_dir.glob("*/events.jsonl")
    raw = audit.read_bytes()
    assert raw.endswith(b"\n"), "the audit ends in half a line"
    events = [json.loads(line) for line in raw.splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    return events


def _check_scopes(events: list[dict], truncated_by: str | None) -> None:
    """Each scope and phase that started has ended once; those cut short say so."""
    starts = Counter(e["scope"] for e in events if e["kind"] == "scope_start")
    ends = Counter(e["scope"] for e in events if e["kind"] == "scope_end")
    assert starts == ends
    for event in events:
        if event["kind"] in ("scope_end", "phase") and "truncated" in event["data"]:
            assert event["data"]["truncated"] == truncated_by


def _the_end(events: list[dict]) -> dict:
    ends = [e for e in events if e["kind"] == "experiment_end"]
    assert len(ends) == 1, f"{len(ends)} end records"
    return ends[0]["data"]


def _steps(events: list[dict]) -> list[int]:
    return [e["step"] for e in events if e["kind"] == "training_step"]


# --- SIGTERM ------------------------------------------------------------------------------------

CALLS = """
def scenario(tracker, rng, done):
    later(rng.uniform(0.0, 0.15), os.kill, os.getpid(), signal.SIGTERM)
    step = 0
    while True:
        step += 1
        busy(rng)
        tracker.log_training_step(step, {"loss": 1.0 / step, "acc": step % 7 / 7})
        done[0] = step
        if step % 5 == 0:
            tracker.log_comment(f"step {step}")
            tracker.log_reward("agent", rng.random())
"""

SCOPE_EXITS = """
def scenario(tracker, rng, done):
    later(rng.uniform(0.0, 0.15), os.kill, os.getpid(), signal.SIGTERM)
    step = 0
    while True:
        with tracker.builder_scope(str(step % 3)):
            with tracker.network_scope("n1"), tracker.span("forward"):
                busy(rng)
            with tracker.span("backward"):
                step += 1
                tracker.log_training_step(step, {"loss": 1.0 / step})
                done[0] = step
            busy(rng)
"""

FINALIZE = """
def scenario(tracker, rng, done):
    steps = rng.randrange(1, 400)
    for step in range(1, steps + 1):
        with tracker.builder_scope("b"):
            tracker.log_training_step(step, {"loss": 1.0 / step})
        done[0] = step
    later(rng.uniform(0.0, 0.05), os.kill, os.getpid(), signal.SIGTERM)
    tracker.finalize_experiment()
    done[1] = 1
    threading.Event().wait(30)  # the signal ends the process
"""


CTRL_C = """
def scenario(tracker, rng, done):
    later(rng.uniform(0.0, 0.15), os.kill, os.getpid(), signal.SIGINT)
    step = 0
    while True:
        with tracker.builder_scope(str(step % 3)), tracker.span("forward"):
            step += 1
            tracker.log_training_step(step, {"loss": 1.0 / step})
            done[0] = step
            busy(rng)
"""

USER_EXITS = """
def scenario(tracker, rng, done):
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(3))  # the user's, set after start(): not ours
    later(rng.uniform(0.0, 0.15), os.kill, os.getpid(), signal.SIGTERM)
    step = 0
    while True:
        with tracker.builder_scope(str(step % 3)):
            step += 1
            tracker.log_training_step(step, {"loss": 1.0 / step})
            done[0] = step
            tracker.log_comment(f"step {step}")
            busy(rng)
"""  # noqa: E501 - a line of the script

# Profilers and coverage hold the hooks a deferred ending uses: cProfile (C code) holds the profile
# slot; callable objects stand for C tracers in both slots, which leaves only the watcher thread.
UNDER_CPROFILE = SCOPE_EXITS.replace("def scenario(tracker, rng, done):", """def scenario(tracker, rng, done):
    import cProfile
    cProfile.Profile().enable()""")
UNDER_TWO_TRACERS = SCOPE_EXITS.replace(
    "def scenario(tracker, rng, done):", """def scenario(tracker, rng, done):
    class Tool:
        def __call__(self, frame, event, arg):
            return None
    sys.setprofile(Tool())
    sys.settrace(Tool())""")
SIGTERM_SCENARIOS = {  # name: (script, seeds): the three the issue names get 20 seeds, the variants fewer
    "calls": (CALLS, SEEDS), "scope_exits": (SCOPE_EXITS, SEEDS), "finalize": (FINALIZE, SEEDS),
    "calls_async": ("ASYNC_MODE = True\n" + CALLS, 6),
    "finalize_async": ("ASYNC_MODE = True\n" + FINALIZE, 8),
    "under_cprofile": (UNDER_CPROFILE, 6), "under_two_tracers": (UNDER_TWO_TRACERS, 6),
    "ctrl_c": (CTRL_C, 12), "user_exits": (USER_EXITS, 12)}


@pytest.fixture(scope="module")
def sigterm_runs(tmp_path_factory):
    """The SIGTERM scenarios, run side by side (each a child forking one process per seed)."""
    folders = {name: tmp_path_factory.mktemp(name) for name in SIGTERM_SCENARIOS}
    children = {name: _start(script, folders[name], range(seeds))
                for name, (script, seeds) in SIGTERM_SCENARIOS.items()}
    try:
        return {name: (folders[name], *_results(child)) for name, child in children.items()}
    finally:  # one scenario that did not end must not leave the others running behind the suite
        for child in children.values():
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
                child.communicate()


@pytest.mark.parametrize("scenario",
                         ["calls", "calls_async", "scope_exits", "under_cprofile", "under_two_tracers"])
def test_sigterm_at_any_moment_ends_the_run_terminated_with_every_line(sigterm_runs, scenario):
    """Wherever SIGTERM lands (inside a call, half-way through a line, a scope exiting, the user's
    own code), the run ends `terminated` by `sigterm`, every step that was logged is in the audit,
    every line parses, every scope ends (those cut short as truncated), and the process still dies
    of SIGTERM.

    Where no hook is free (two tracers in C), a watcher thread ends the run as soon as the call has
    returned, and the main thread runs on until the signal is re-sent: calls in that moment come
    after the end record (recorded in the audit only), never inside the run's record."""
    folder, results, stderr = sigterm_runs[scenario]
    _no_errors(stderr)
    assert len(results) == SIGTERM_SCENARIOS[scenario][1]
    for result in results:
        events = _audit(folder / str(result["seed"]))
        assert result["rc"] == -15, result
        end = _the_end(events)
        assert (end["status"], end["ended_by"]) == ("terminated", "sigterm")
        run = events[:next(i for i, e in enumerate(events) if e["kind"] == "experiment_end") + 1]
        if scenario != "under_two_tracers":
            assert run == events  # the process ended right after the run did
        steps = _steps(events)
        assert steps == list(range(1, len(steps) + 1))
        # + the call it interrupted
        assert result["last_step"] <= len(steps) <= result["last_step"] + 1, result
        _check_scopes(run, "sigterm")


@pytest.mark.parametrize("scenario", ["finalize", "finalize_async"])
def test_sigterm_during_finalize_loses_nothing(sigterm_runs, scenario):
    """SIGTERM while finalize runs: finalize finishes first (every step, the end record), then the
    process dies of the signal. A signal that came before finalize ends the run as terminated."""
    folder, results, stderr = sigterm_runs[scenario]
    _no_errors(stderr)
    assert len(results) == SIGTERM_SCENARIOS[scenario][1]
    for result in results:
        events = _audit(folder / str(result["seed"]))
        assert result["rc"] == -15, result
        end = _the_end(events)
        assert _steps(events) == list(range(1, result["last_step"] + 1))
        expected = ("finished", "finalize_experiment") if result["finished"] else ("terminated", "sigterm")
        assert (end["status"], end["ended_by"]) in (expected, ("finished", "finalize_experiment"))
        assert events[-1]["kind"] == "experiment_end"
        _check_scopes(events, "sigterm")


# --- finalize from another thread, from a signal handler ------------------------------------------

FROM_A_THREAD = """
def scenario(tracker, rng, done):
    stop = threading.Event()
    def end():
        try:
            summary = tracker.finalize_experiment()
            assert summary["status"] == "finished", summary
        finally:
            stop.set()
    later(rng.uniform(0.0, 0.2), end)
    later(rng.uniform(0.0, 0.2), tracker.finalize_experiment)  # two threads at once, too
    step = 0
    while not stop.is_set():
        with tracker.builder_scope(str(step % 2)), tracker.span("forward"):
            step += 1
            tracker.log_training_step(step, {"loss": 1.0 / step})
            busy(rng)
    assert tracker.finalize_experiment()["status"] == "finished"
    done[0], done[1] = step, 1
"""

FROM_A_HANDLER = """
def scenario(tracker, rng, done):
    stop = []
    def on_usr1(signum, frame):
        try:
            tracker.finalize_experiment()
        finally:
            stop.append(True)
    signal.signal(signal.SIGUSR1, on_usr1)
    later(rng.uniform(0.0, 0.2), os.kill, os.getpid(), signal.SIGUSR1)
    step = 0
    while not stop:
        with tracker.builder_scope(str(step % 2)), tracker.span("forward"):
            step += 1
            tracker.log_training_step(step, {"loss": 1.0 / step})
            busy(rng)
    assert tracker.finalize_experiment()["status"] == "finished"
    done[0], done[1] = step, 1
"""


@pytest.fixture(scope="module")
def finalize_runs(tmp_path_factory):
    folders = {name: tmp_path_factory.mktemp(name) for name in ("thread", "handler")}
    children = {"thread": _start(FROM_A_THREAD, folders["thread"]),
                "handler": _start(FROM_A_HANDLER, folders["handler"])}
    return {name: (folders[name], *_results(child)) for name, child in children.items()}


@pytest.mark.parametrize("caller", ["thread", "handler"])
def test_finalize_from_anywhere_ends_the_run_exactly_once(finalize_runs, caller):
    """finalize_experiment() from other threads (two at once) or from the user's signal handler,
    whatever the main thread is doing: one end record, `finished`, every step and scope present,
    every line whole, and every later finalize returns the finished summary."""
    folder, results, stderr = finalize_runs[caller]
    _no_errors(stderr)
    assert len(results) == SEEDS
    for result in results:
        assert result["rc"] == 0 and result["finished"] == 1, result
        events = _audit(folder / str(result["seed"]))
        end = _the_end(events)
        assert (end["status"], end["ended_by"]) == ("finished", "finalize_experiment")
        assert _steps(events) == list(range(1, result["last_step"] + 1))
        _check_scopes(events, "finalize_experiment")


# --- a multiprocessing pool's terminate() -----------------------------------------------------------

POOL = r"""
import multiprocessing, os, random, sys
from lezea_otel import ExperimentTracker

tracker = ExperimentTracker("pool", runs_dir=sys.argv[1], quiet=True)
tracker.start(prometheus_port=None)
print(tracker.experiment_id, flush=True)
context = multiprocessing.get_context("fork")
logging_now = context.Semaphore(0)

def quick(index):
    tracker.log_training_step(100 + index, {"loss": 1.0})

def endless(index):
    rng = random.Random(index)
    step = 0
    while True:
        step += 1
        with tracker.builder_scope(f"w{index}"):
            tracker.log_training_step(1000 * (index + 1) + step, {"loss": 1.0 / step})
        if step == 1:
            logging_now.release()
        sum(range(rng.randrange(0, 400)))

with tracker.builder_scope("b"):
    with context.Pool(2) as pool:  # idle workers: `with` ends them with terminate()
        pool.map(quick, range(4))
    with context.Pool(2) as pool:  # busy workers: terminate() lands in the middle of their calls
        pool.map_async(endless, range(2))
        assert all(logging_now.acquire(timeout=30) for _ in range(2))
tracker.finalize_experiment()
"""


def test_pool_terminate_ends_every_workers_run_part(tmp_path):
    """`with Pool()` ends its workers with terminate() (SIGTERM): every worker that logged still
    ends its part of the run, idle (finished or terminated) or busy (terminated, its open scope
    truncated), and keeps every step it logged."""
    proc = subprocess.run([sys.executable, "-c", POOL, str(tmp_path)], capture_output=True, text=True,
                          timeout=120, env=_env(), check=False)
    assert proc.returncode == 0, proc.stderr
    _no_errors(proc.stderr)
    (run_dir,) = tmp_path.iterdir()
    workers = sorted((run_dir / "workers").glob("*/events.jsonl"))
    assert len(workers) >= 3  # the first pool's workers (one or two) and both busy ones
    quick_steps, busy = [], 0
    for audit in workers:
        events = [json.loads(line) for line in audit.read_text().splitlines()]
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        end = _the_end(events)
        assert events[0]["kind"] == "experiment_start" and events[-1]["kind"] == "experiment_end"
        steps = _steps(events)
        if any(step >= 1000 for step in steps):
            busy += 1
            assert (end["status"], end["ended_by"]) == ("terminated", "sigterm")
            assert steps == list(range(steps[0], steps[0] + len(steps)))
            _check_scopes(events, "sigterm")
        else:
            assert end["status"] in ("finished", "terminated")
            quick_steps += steps
    assert busy == 2 and sorted(quick_steps) == [100, 101, 102, 103]
    parent = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert _the_end(parent)["status"] == "finished"


# --- a full disk ------------------------------------------------------------------------------------

FULL_DISK = r"""
import json, os, sys
from lezea_otel import ExperimentTracker

how, runs = sys.argv[1], sys.argv[2]
tracker = ExperimentTracker("full", runs_dir=runs, quiet=True)
tracker.start(prometheus_port=None)
if how == "tmpfs":  # fill what is left of the small disk
    filler = os.open(os.path.join(runs, "filler"), os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(filler, b"x" * 512):
            pass
    except OSError:
        os.close(filler)
else:  # no file may grow past its size now: the audit is full
    import resource, signal
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    size = os.path.getsize(tracker.audit_path)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 3000, hard))
for step in range(1, 801):  # far more than fits, in several buffer flushes
    tracker.log_training_step(step, {"loss": 1.0 / step, "accuracy": step / 800}, data_split="train" * 8)
if how == "tmpfs":
    os.remove(os.path.join(runs, "filler"))  # room again: later lines are written
else:
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
for step in range(801, 811):
    tracker.log_training_step(step, {"loss": 1.0 / step})
summary = tracker.finalize_experiment()
# every call counted: 800 in the long-named split (calls, not training steps) and 10 training steps
print(json.dumps({"summary": summary is not None and summary["status"],
                  "steps": sum(summary["steps"]["splits"].values()),
                  "lines": summary["signals"]["audit_lines"], "lost": summary["signals"]["audit_lost"],
                  "audit": str(tracker.audit_path)}))
"""


@pytest.fixture
def small_disk(tmp_path):
    """A 128 KiB tmpfs (the suite runs as root, as README's test command and CI do)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(mount)],
                          capture_output=True, check=False)
    assert done.returncode == 0, (
        f"the suite runs as root (README's test command) and mounts a tmpfs: {done.stderr!r}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("how", ["tmpfs", "file size limit"])
def test_full_disk_keeps_the_audit_whole_and_says_what_was_lost(request, tmp_path, how):
    """The disk fills up mid-run: no internal error, the summary still returns (every step counted),
    the audit keeps only whole lines (a write cut off mid-line is cut back, so no later line glues
    onto it), later lines are written once there is room, the end record included, and one
    warning says the audit could not be written in full and how many lines were lost."""
    runs = request.getfixturevalue("small_disk") if how == "tmpfs" else tmp_path
    env = {**_env(), "LEZEA_QUIET": "1"}
    proc = subprocess.run([sys.executable, "-c", FULL_DISK, how.split()[0], str(runs)], capture_output=True,
                          text=True, timeout=60, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "internal error" not in proc.stderr, proc.stderr  # (the OTel SDK's file exporters log tracebacks)
    reported = json.loads(proc.stdout.splitlines()[-1])
    assert reported["summary"] == "finished" and reported["steps"] == 810
    raw = Path(reported["audit"]).read_bytes()
    assert raw.endswith(b"\n")
    events = [json.loads(line) for line in raw.splitlines()]  # every line whole
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    lost = reported["lines"] - len(events)
    assert lost > 0 and reported["lost"] == lost
    assert events[-1]["kind"] == "experiment_end" and events[-1]["data"]["status"] == "finished"
    assert _steps(events)[-10:] == list(range(801, 811))
    warnings = [line for line in proc.stderr.splitlines() if "audit could not be written" in line]
    assert len(warnings) == 1 and f"{lost} lines" in warnings[0], proc.stderr


def test_ctrl_c_at_any_moment_ends_the_run_failed_with_every_line(sigterm_runs):
    """Ctrl-C at any moment: KeyboardInterrupt is raised in the user's code or, when it lands in one
    of our calls, as that call returns (never half-way through a scope's exit or a line). The program
    ends as Python ends it, and the run ends `failed` with the interruption, whole and complete."""
    folder, results, stderr = sigterm_runs["ctrl_c"]
    assert "internal error" not in stderr, stderr[-3000:]
    assert len(results) == SIGTERM_SCENARIOS["ctrl_c"][1]
    for result in results:
        assert result["rc"] == 1, result
        events = _audit(folder / str(result["seed"]))
        end = _the_end(events)
        assert (end["status"], end["ended_by"]) == ("failed", "atexit")
        assert "KeyboardInterrupt" in end["error"]
        steps = _steps(events)
        assert steps == list(range(1, len(steps) + 1))
        assert result["last_step"] <= len(steps) <= result["last_step"] + 1, result
        _check_scopes(events, "atexit")


def test_a_users_handler_that_exits_anywhere_leaves_whole_lines(sigterm_runs):
    """The user's own SIGTERM handler (set after ours) calls sys.exit() wherever the signal lands,
    inside our writes too: no line is torn or written twice, every step whose call returned is
    there, and the run still ends (at exit)."""
    folder, results, stderr = sigterm_runs["user_exits"]
    assert "internal error" not in stderr, stderr[-3000:]
    assert len(results) == SIGTERM_SCENARIOS["user_exits"][1]
    for result in results:
        assert result["rc"] == 3, result
        (audit,) = (folder / str(result["seed"])).glob("*/events.jsonl")
        raw = audit.read_bytes()
        assert raw.endswith(b"\n")
        events = [json.loads(line) for line in raw.splitlines()]
        seqs = [e["seq"] for e in events]
        assert seqs == sorted(set(seqs))  # a call cut short may have drawn its number and written nothing
        assert (_the_end(events)["status"], _the_end(events)["ended_by"]) == ("abandoned", "atexit")
        steps = _steps(events)
        assert steps == sorted(set(steps)) and set(range(1, result["last_step"] + 1)) <= set(steps)
