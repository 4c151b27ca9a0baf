"""``tracker.watch``: the phases of a plain PyTorch loop from PyTorch's own hooks, on a real model and
optimizer, against timers around the same calls; and what the hooks cannot see."""

from __future__ import annotations

import time

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lezea_otel import semconv as names
from lezea_otel.analysis.runs import load_run

from .frameworks import events, phase_names

STEP = ["forward", "backward", "optimizer"]


def mlp(width: int = 8) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Linear(width, 1))


def batches(count: int, width: int = 8, size: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.randn(size, width), torch.randn(size, 1)) for _ in range(count)]


def train_step(model, optimizer, x, y) -> float:
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss.item()


class TestWatch:
    def test_each_step_has_its_phases_in_order_timed_as_timers_around_the_same_calls(self, capture):
        """forward, backward and optimizer per step, in order; their total durations within a few percent
        of perf_counter timers around ``model(x)``, ``loss.backward()`` and ``optimizer.step()``."""
        width = 1024
        model = mlp(width)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        tracker = capture.tracker("watch", auto_start=True)
        tracker.watch(model, optimizer)
        timers = {name: 0.0 for name in STEP}
        for step, (x, y) in enumerate(batches(12, width, 1024), 1):
            started = time.perf_counter()
            output = model(x)
            forward_done = time.perf_counter()
            loss = torch.nn.functional.mse_loss(output, y)
            backward_started = time.perf_counter()
            loss.backward()
            backward_done = time.perf_counter()
            optimizer.step()
            step_done = time.perf_counter()
            optimizer.zero_grad()
            if step > 2:  # the first steps warm the allocator and the hooks up
                timers["forward"] += forward_done - started
                timers["backward"] += backward_done - backward_started
                timers["optimizer"] += step_done - backward_done
            tracker.log_training_step(step, {"loss": loss.item()})
        tracker.finalize_experiment()

        phases = events(tracker.audit_path, "phase")
        assert [p["data"]["name"] for p in phases] == STEP * 12
        assert all(p["data"]["attributes"][names.PHASE_SOURCE] == names.SOURCE_TORCH_HOOKS for p in phases)
        for name, timed in timers.items():
            measured = sum(p["data"]["duration_s"] for p in phases[6:] if p["data"]["name"] == name)
            assert measured <= timed  # the hooks' own cost is outside the phases
            # within 5 %, or 0.3 ms a step: the hooks' own calls (a few tens of µs, more on a busy machine)
            assert measured == pytest.approx(timed, rel=0.05, abs=0.003), name
        by_name: dict[str, list[int | None]] = {}
        for item in load_run(tracker.run_dir).timed:
            by_name.setdefault(item.name, []).append(item.step)
        assert by_name == {name: list(range(1, 13)) for name in STEP}  # each phase on its own step

    def test_nothing_after_unwatch_and_the_loader_gets_its_class_back(self, capture):
        model, loader = mlp(), DataLoader(TensorDataset(torch.randn(16, 8), torch.randn(16, 1)), batch_size=4)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        tracker = capture.tracker("unwatch", auto_start=True)
        tracker.watch(model, optimizer, loader=loader)
        assert isinstance(loader, DataLoader) and type(loader).__name__ == "DataLoader"
        for x, y in loader:
            train_step(model, optimizer, x, y)
        tracker.unwatch(model)
        assert type(loader) is DataLoader
        for x, y in loader:
            train_step(model, optimizer, x, y)
        tracker.finalize_experiment()
        assert phase_names(tracker.audit_path) == ["data", *STEP] * 4
        data = [p for p in events(tracker.audit_path, "phase") if p["data"]["name"] == "data"]
        assert {p["data"]["attributes"][names.PHASE_KIND] for p in data} == {names.DATA_WAIT}

    def test_phases_nest_under_the_open_scope_and_inside_iterate(self, capture):
        """The hook phases are children of the scope open at the time; ``tracker.iterate`` still times the
        data wait beside them, and a phase the user opens inside the forward nests under ``forward``."""
        model = mlp()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        inner = model[0]
        inner.register_forward_hook(lambda *_: None)
        tracker = capture.tracker("nested", auto_start=True)
        tracker.watch(model, optimizer)

        def traced_forward(x):
            with tracker.span("first_layer"):
                return inner.__class__.forward(inner, x)

        inner.forward = traced_forward
        with tracker.builder_scope("b1"):
            for x, y in tracker.iterate(batches(3)):
                train_step(model, optimizer, x, y)
        tracker.finalize_experiment()

        records = events(tracker.audit_path)
        (scope,) = [r for r in records if r["kind"] == "scope_start"]
        phases = [r for r in records if r["kind"] == "phase"]
        assert [p["data"]["name"] for p in phases] == ["data", "first_layer", *STEP] * 3
        forwards = {p["span_id"] for p in phases if p["data"]["name"] == "forward"}
        for phase in phases:
            expected = forwards if phase["data"]["name"] == "first_layer" else {scope["span_id"]}
            assert phase["parent_span_id"] in expected and phase["scope"] == "builder:b1"

    def test_a_second_watch_is_a_warning_and_never_double_phases(self, capture, lezea_warnings):
        model = mlp()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        tracker = capture.tracker("twice", auto_start=True)
        tracker.watch(model, optimizer)
        tracker.watch(model, optimizer)
        train_step(model, optimizer, *batches(1)[0])
        tracker.finalize_experiment()
        assert phase_names(tracker.audit_path) == STEP
        assert [m for m in lezea_warnings() if m.startswith("watch")] == [
            "watch: model is watched already: its phases are recorded once; call unwatch(model) first to "
            "watch it again"]

    def test_bad_input_is_one_warning_and_training_goes_on(self, capture, lezea_warnings):
        tracker = capture.tracker("bad", auto_start=True)
        model = mlp()
        tracker.watch("not a model")
        tracker.watch(model, optimizer="adam", loader=[1, 2])
        tracker.unwatch(mlp())
        tracker.watch()  # type: ignore[call-arg]
        train_step(model, torch.optim.SGD(model.parameters(), lr=0.1), *batches(1)[0])
        tracker.finalize_experiment()
        assert phase_names(tracker.audit_path) == ["forward", "backward"]
        warned = lezea_warnings()
        assert warned[0] == "watch: model is not a torch.nn.Module: got str 'not a model'; nothing is watched"
        assert warned[1].startswith("watch: optimizer is not a torch.optim.Optimizer")
        assert warned[2] == ("watch: loader cannot be watched: a list cannot take a subclass; iterate it "
                             "with tracker.iterate(loader) to time its waits")
        assert warned[3] == ("unwatch: model is not watched by this tracker: got a Sequential; nothing to "
                             "remove")
        assert warned[4].startswith("watch() missing 1 required positional argument: 'model'")

    def test_a_forward_that_raises_ends_its_phase_with_the_error(self, capture):
        model = mlp()
        tracker = capture.tracker("raises", auto_start=True)
        tracker.watch(model)
        with pytest.raises(RuntimeError):
            model(torch.randn(2, 3))  # the wrong width
        with tracker.span("after"):
            pass
        tracker.finalize_experiment()
        forward, after = events(tracker.audit_path, "phase")
        assert forward["data"]["name"] == "forward" and "mat1 and mat2" in forward["data"]["error"]
        assert after["parent_span_id"] == forward["parent_span_id"]  # the forward left nothing open


class TestWhatHooksCannotSee:
    def test_gradient_accumulation_times_each_micro_batch_and_one_optimizer_step(self, capture):
        """Accumulating 3 micro-batches: 3 forwards and 3 backwards per optimizer step, as they ran."""
        model = mlp()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        tracker = capture.tracker("accumulation", auto_start=True)
        tracker.watch(model, optimizer)
        for step in range(2):
            for x, y in batches(3):
                torch.nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()
            optimizer.zero_grad()
            tracker.log_training_step(step + 1, {"loss": 1.0})
        tracker.finalize_experiment()
        assert phase_names(tracker.audit_path) == (["forward", "backward"] * 3 + ["optimizer"]) * 2

    def test_several_optimizers_each_have_their_step_and_one_not_given_is_not_seen(self, capture):
        generator, critic = mlp(), mlp()
        given = torch.optim.SGD(generator.parameters(), lr=0.1)
        also_given = torch.optim.Adam(critic.parameters(), lr=0.1)
        not_given = torch.optim.SGD(critic.parameters(), lr=0.1)
        tracker = capture.tracker("optimizers", auto_start=True)
        tracker.watch(generator, [given, also_given])
        x, y = batches(1)[0]
        torch.nn.functional.mse_loss(critic(generator(x).expand(-1, 8)), y).backward()
        given.step()
        also_given.step()
        not_given.step()
        tracker.finalize_experiment()
        assert phase_names(tracker.audit_path) == ["forward", "backward", "optimizer", "optimizer"]

    def test_torch_compile(self, capture):
        """Watching what ``torch.compile`` returns times the compiled call (the first one compiles);
        hooks on the module inside it are traced into the graph and never run: only the optimizer's step
        is seen then."""
        tracker = capture.tracker("compiled", auto_start=True)
        for where in ("outside", "inside"):
            model = mlp()
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            if where == "outside":
                compiled = torch.compile(model, backend="eager")
                tracker.watch(compiled, optimizer)
            else:
                tracker.watch(model, optimizer)
                compiled = torch.compile(model, backend="eager")
            with tracker.builder_scope(where):
                for x, y in batches(2):
                    train_step(compiled, optimizer, x, y)
            tracker.unwatch()
        tracker.finalize_experiment()
        phases = events(tracker.audit_path, "phase")
        assert [p["data"]["name"] for p in phases if p["scope"] == "builder:outside"] == STEP * 2
        assert [p["data"]["name"] for p in phases if p["scope"] == "builder:inside"] == ["optimizer"] * 2


def test_import_lezea_otel_loads_neither_torch_nor_a_framework() -> None:
    import subprocess
    import sys

    frameworks = "('torch', 'lightning', 'transformers', 'accelerate')"
    code = f"import sys, lezea_otel.tracker; print(sorted(m for m in {frameworks} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
