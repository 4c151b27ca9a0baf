"""Every value that reaches the audit is encodable and means what the user meant.

numpy and torch scalars are numbers; integers past 64 bits, lone surrogates and objects whose
dunders raise never cost a line; the user's text "NaN" stays text; and each repair is one warning
that names the call and the parameter as the user wrote it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from lezea_otel import ExperimentTracker
from lezea_otel.audit.reader import read_events
from lezea_otel.audit.record import Record
from lezea_otel.audit.writer import AuditWriter
from lezea_otel.cli import main as cli
from lezea_otel.util import values

from .hostile import BadFloat, ClassRaising, Raising


def raw_lines(tracker: ExperimentTracker) -> list[dict[str, Any]]:
    """The audit as written, every line parsed by orjson (get_experiment_data flushes it first)."""
    tracker.get_experiment_data()
    return [orjson.loads(line) for line in tracker.audit_path.read_bytes().splitlines()]


def lines_of(tracker: ExperimentTracker, kind: str) -> list[dict[str, Any]]:
    return [line for line in raw_lines(tracker) if line["kind"] == kind]


def read_back(tracker: ExperimentTracker, kind: str) -> list[dict[str, Any]]:
    tracker.get_experiment_data()
    return [event for event in read_events(tracker.audit_path) if event["kind"] == kind]


def only(messages: list[str], *words: str) -> list[str]:
    return [m for m in messages if all(w in m for w in words)]


NUMPY_SCALARS = [np.float16(0.5), np.float32(0.5), np.float64(0.5), np.longdouble(0.5), np.int8(-3),
                 np.int16(3), np.int32(3), np.int64(3), np.uint8(3), np.uint16(3), np.uint32(3),
                 np.uint64(2**64 - 1), np.bool_(True), np.array(0.5), np.array([7])]
TORCH_SCALARS = [torch.tensor(0.5), torch.tensor(0.5, dtype=torch.float64),
                 torch.tensor(0.5, dtype=torch.float16), torch.tensor(0.5, dtype=torch.bfloat16),
                 torch.tensor(3), torch.tensor(3, dtype=torch.uint8), torch.tensor(True),
                 torch.tensor(0.5, requires_grad=True)]


class TestNumbers:
    def test_numpy_and_torch_scalars_of_every_dtype_are_numbers(self, tracker, lezea_warnings):
        """Each dtype becomes a JSON number equal to its value, never a text like "np.float64(0.5)"."""
        scalars = NUMPY_SCALARS + TORCH_SCALARS
        tracker.log_training_step(1, {f"v{i}": value for i, value in enumerate(scalars)})
        tracker.log_reward("agent", np.float64(0.7), step=np.int64(1))
        tracker.log_results(result_dict={"acc": np.float32(0.25)}, tasker_rewards={"t": torch.tensor(2.0)})
        (step,) = lines_of(tracker, "training_step")
        written = step["data"]["metrics"]
        for i, value in enumerate(scalars):
            assert isinstance(written[f"v{i}"], float), (value, written[f"v{i}"])
            assert written[f"v{i}"] == float(value.item())
        (reward,) = lines_of(tracker, "reward")
        assert reward["data"]["reward"] == 0.7 and reward["step"] == 1
        (results,) = lines_of(tracker, "results")
        assert results["data"]["result_dict"] == {"acc": 0.25}
        assert results["data"]["tasker_rewards"] == {"t": 2.0}
        assert not lezea_warnings()

    def test_np_float64_loss_is_written_as_the_number(self, tracker):
        """``np.mean`` returns a float subclass: the line says ``"loss":0.5``, and the summary agrees."""
        tracker.log_training_step(1, {"loss": np.float64(0.5)})
        tracker.log_training_step(2, {"loss": np.float64(0.25)})
        tracker.get_experiment_data()
        assert b'"loss":0.5}' in tracker.audit_path.read_bytes()
        assert tracker.get_experiment_summary()["metrics"]["loss"]["best"] == 0.25

    def test_float_subclass_whose_repr_raises_is_its_number(self, tracker, lezea_warnings):
        tracker.log_training_step(1, {"loss": BadFloat(0.5)})
        tracker.log_lezea_config(hyperparameters={"lr": BadFloat(0.001)})
        assert lines_of(tracker, "training_step")[0]["data"]["metrics"] == {"loss": 0.5}
        assert lines_of(tracker, "config")[0]["data"]["hyperparameters"] == {"lr": 0.001}
        assert not lezea_warnings()

    def test_bools_in_metrics_are_numbers(self, tracker, lezea_warnings):
        """As in numpy: True is 1.0 and False 0.0, with no warning."""
        tracker.log_training_step(1, {"converged": True, "diverged": np.bool_(False)})
        assert lines_of(tracker, "training_step")[0]["data"]["metrics"] == {"converged": 1.0, "diverged": 0.0}
        assert not lezea_warnings()

    def test_numpy_integer_ids_stay_integers(self, tracker):
        tracker.log_data_splits(train_ids=np.arange(3), val_ids=[np.int64(7), torch.tensor(8)])
        tracker.log_data_usage([np.int32(1), "s2"], epoch=np.int64(2))
        (splits,) = lines_of(tracker, "data_splits")
        assert splits["data"]["train"]["ids"] == [0, 1, 2] and splits["data"]["val"]["ids"] == [7, 8]
        (usage,) = lines_of(tracker, "data_usage")
        assert usage["data"]["sample_ids"] == [1, "s2"] and usage["data"]["epoch"] == 2

    def test_a_reward_as_np_float64_leaves_the_cli_working(self, capture, tmp_path):
        """``lezea-otel runs``, ``show`` and ``report`` read a run whose reward came from numpy."""
        tracker = capture.tracker("cli", auto_start=True)
        tracker.log_reward("t0", np.float64(0.7))
        tracker.log_training_step(1, {"loss": np.float64(0.5)})
        tracker.finalize_experiment()
        runner = CliRunner()
        listed = runner.invoke(cli, ["runs", str(capture.runs_dir)])
        assert listed.exit_code == 0, listed.output
        assert "0.5" in listed.output
        shown = runner.invoke(cli, ["show", tracker.experiment_id, "--runs-dir", str(capture.runs_dir)])
        assert shown.exit_code == 0, shown.output
        assert "reward tasker:t0: last 0.7" in shown.output
        reported = runner.invoke(cli, ["report", tracker.experiment_id, "--runs-dir", str(capture.runs_dir),
                                       "-o", str(tmp_path / "r.html")])
        assert reported.exit_code == 0, reported.output


class TestBeyondSixtyFourBits:
    def test_a_huge_step_warns_and_the_line_and_summary_stay_sane(self, tracker, lezea_warnings):
        """The line is written without the step; the next real step does not 'not increase'."""
        tracker.log_training_step(2**70, {"loss": 1.0})
        tracker.log_training_step(1e20, {"loss": 0.9})
        tracker.log_training_step(5, {"loss": 0.8})
        steps = lines_of(tracker, "training_step")
        assert [s["step"] for s in steps] == [None, None, 5]
        assert [s["data"]["metrics"]["loss"] for s in steps] == [1.0, 0.9, 0.8]
        assert tracker.get_experiment_summary()["steps"] == {"count": 3, "first": 5, "last": 5,
                                                                "splits": {"train": 3}}
        warned = only(lezea_warnings(), "log_training_step", "step is beyond the 64-bit integer range")
        assert len(warned) == 1 and "recorded without a step" in warned[0]
        assert not only(lezea_warnings(), "did not increase")
        assert not only(lezea_warnings(), "internal error")

    def test_huge_ints_in_values_ids_and_config_keep_their_line(self, tracker, lezea_warnings):
        tracker.log_training_step(1, {"tokens": 2**70, "small": 3})
        tracker.log_lezea_config(tasker_population_size=8, hyperparameters={"seed": 2**80, "huge": 10**5000})
        tracker.log_data_splits(train_ids=[1, 2**70])
        tracker.log_data_usage(["a"], epoch=2**64)
        tracker.log_reward("a", 10**400)
        metrics = lines_of(tracker, "training_step")[0]["data"]["metrics"]
        assert metrics == {"tokens": float(2**70), "small": 3}
        config = lines_of(tracker, "config")[0]["data"]
        assert config["hyperparameters"]["seed"] == str(2**80)  # exact, as text
        assert config["hyperparameters"]["huge"] == format(10**5000, "#x")[:values.MAX_TEXT]
        assert lines_of(tracker, "data_splits")[0]["data"]["train"]["ids"] == [1, str(2**70)]
        assert lines_of(tracker, "data_usage")[0]["data"]["epoch"] is None
        assert lines_of(tracker, "reward")[0]["data"]["reward"] == values.FLOAT_MAX
        messages = lezea_warnings()
        assert only(messages, "log_training_step", "'tokens'", "beyond 64 bits")
        assert only(messages, "log_lezea_config", "hyperparameters", "beyond 64 bits", "kept as text")
        assert only(messages, "log_data_usage", "epoch is beyond the 64-bit integer range")
        assert only(messages, "log_reward", "reward is an integer beyond 64 bits", "clamped")
        assert not only(messages, "internal error")


class TestText:
    def test_lone_surrogates_are_replaced_with_one_warning(self, capture, lezea_warnings):
        tracker = capture.tracker("run \udcff", tags=["t\ud800"], auto_start=True)
        for _ in range(3):
            tracker.log_comment("bad \udcfe byte")
        tracker.log_training_step(1, {"lo\udcffss": 0.5}, data_split="va\udcffl")
        tracker.finalize_experiment()
        lines = [orjson.loads(line) for line in tracker.audit_path.read_bytes().splitlines()]
        start = next(line for line in lines if line["kind"] == "experiment_start")
        assert start["data"]["name"] == "run \ufffd" and start["data"]["tags"] == ["t\ufffd"]
        comments = [line["data"]["text"] for line in lines if line["kind"] == "comment"]
        assert comments == ["bad \ufffd byte"] * 3
        step = next(line for line in lines if line["kind"] == "training_step")
        assert step["data"] == {"metrics": {"lo\ufffdss": 0.5}, "data_split": "va\ufffdl"}
        assert len(only(lezea_warnings(), "log_comment", "comment is not valid UTF-8")) == 1
        assert only(lezea_warnings(), "ExperimentTracker", "experiment_name is not valid UTF-8")

    def test_latin1_checkpoint_file_is_found_hashed_and_recorded(self, tracker, tmp_path, lezea_warnings):
        """A name from ``os.listdir`` that is not UTF-8: the file is still stat'ed and hashed."""
        folder = tmp_path / "ckpt"
        folder.mkdir()
        (folder / os.fsdecode(b"model-\xff.pt")).write_bytes(b"weights")
        (name,) = os.listdir(folder)
        tracker.log_checkpoint(str(folder / name), step=1)
        (line,) = lines_of(tracker, "checkpoint")
        assert line["data"]["path"] == str(folder / "model-\ufffd.pt")
        assert line["data"]["exists"] is True and line["data"]["size_bytes"] == 7
        assert line["data"]["sha256"] is not None
        assert only(lezea_warnings(), "log_checkpoint", "checkpoint_path is not valid UTF-8")

    def test_pathlib_checkpoint_path_is_not_a_wrong_type(self, tracker, tmp_path, lezea_warnings):
        path = tmp_path / "model.pt"
        path.write_bytes(b"x")
        tracker.log_checkpoint(path)
        assert lines_of(tracker, "checkpoint")[0]["data"]["path"] == str(path)
        assert not lezea_warnings()

    def test_text_that_reads_like_nan_stays_text(self, capture):
        """A comment, a tag or a hyperparameter "NaN" reads back as text; a NaN loss as a float."""
        tracker = capture.tracker("NaN", tags=["Infinity"], auto_start=True)
        tracker.log_comment("NaN")
        tracker.log_lezea_config(algorithm_type="-Infinity", hyperparameters={"note": "NaN", "lr": math.nan})
        tracker.log_training_step(1, {"loss": math.nan, "acc": 0.5}, data_split="NaN")
        data = tracker.get_experiment_data()
        by_kind = data["events_by_kind"]
        assert by_kind["comment"][0]["data"]["text"] == "NaN"
        assert by_kind["experiment_start"][0]["data"]["tags"] == ["Infinity"]
        config = by_kind["config"][0]["data"]
        assert config["algorithm_type"] == "-Infinity" and config["hyperparameters"]["note"] == "NaN"
        assert math.isnan(config["hyperparameters"]["lr"])
        step = by_kind["training_step"][0]
        assert math.isnan(step["data"]["metrics"]["loss"]) and step["data"]["data_split"] == "NaN"
        json.dumps(data)  # text stays text: nothing a JSON encoder chokes on but the real NaN
        tracker.finalize_experiment()
        raw = tracker.audit_path.read_bytes()
        assert b'"loss":"NaN"' in raw  # a NaN loss looks as it always did

    def test_lines_from_before_the_nonfinite_list_are_read_as_before(self, tmp_path):
        """An old line has no ``nonfinite`` list: its NaN texts are floats, but in fields that are text."""
        audit = tmp_path / "events.jsonl"
        old = [{"seq": 1, "kind": "training_step", "data": {"metrics": {"loss": "NaN", "g": "-Infinity"}}},
               {"seq": 2, "kind": "comment", "data": {"text": "NaN"}},
               {"seq": 3, "kind": "config", "data": {"hyperparameters": {"lr": "Infinity"}}}]
        audit.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in old) + b"[1, 2]\n")
        problems: list[str] = []
        step, comment, config = read_events(audit, problems)
        assert math.isnan(step["data"]["metrics"]["loss"]) and step["data"]["metrics"]["g"] == -math.inf
        assert comment["data"]["text"] == "NaN"
        assert config["data"]["hyperparameters"]["lr"] == math.inf
        assert len(problems) == 1 and "line 4 is not a JSON object" in problems[0]

    def test_long_labels_are_cut_with_one_warning(self, tracker, lezea_warnings):
        split = "s" * 200_000
        tracker.log_training_step(1, {"loss": 1.0}, data_split=split)
        tracker.log_training_step(2, {"loss": 0.9}, data_split=split)
        tracker.log_reward("a" * 1000, 1.0)
        splits = {len(s["data"]["data_split"]) for s in lines_of(tracker, "training_step")}
        assert splits == {values.MAX_LABEL}
        assert len(lines_of(tracker, "reward")[0]["data"]["agent_id"]) == values.MAX_LABEL
        assert len(only(lezea_warnings(), "log_training_step", "data_split is longer than 256")) == 1
        assert only(lezea_warnings(), "log_reward", "agent_id is longer than 256")


class TestOddObjects:
    def test_describe_is_total_and_short(self):
        for thing in (Raising(), ClassRaising(), BadFloat(1.5), 10**5000, "x" * 10_000, "\udcff",
                      list(range(10_000)), {Raising(): Raising()}, np.zeros((1000, 1000)), torch.ones(3)):
            shown = values.describe(thing)
            assert isinstance(shown, str) and len(shown) <= 110
            shown.encode("utf-8")

    def test_objects_whose_dunders_raise_cost_only_themselves(self, tracker, lezea_warnings):
        tracker.log_training_step(1, {"loss": 0.5, "odd": Raising(), "proxy": ClassRaising()})
        tracker.log_lezea_config(algorithm_type=Raising(), hyperparameters={"obj": Raising(), "lr": 0.1})
        tracker.log_data_score(Raising(), 1.0, 0.5)
        tracker.log_modification_tree(step=1, modifications=[Raising()],
                                      statistics={"x": ClassRaising(), "n": 2})
        assert lines_of(tracker, "training_step")[0]["data"]["metrics"] == {"loss": 0.5}
        config = lines_of(tracker, "config")[0]["data"]
        assert config["hyperparameters"]["lr"] == 0.1
        assert config["hyperparameters"]["obj"].startswith("Raising")
        assert config["algorithm_type"].startswith("Raising")
        assert lines_of(tracker, "data_score")[0]["data"]["score"] == 0.5
        tree = lines_of(tracker, "modification_tree")[0]["data"]
        assert tree["statistics"]["n"] == 2.0 and len(tree["modifications"]) == 1
        assert only(lezea_warnings(), "log_training_step", "'odd' is not a number")
        assert not only(lezea_warnings(), "internal error")

    def test_a_zero_d_array_as_ids_keeps_the_split_beside_it(self, tracker, lezea_warnings):
        tracker.log_data_splits(train_ids=[1, 2], val_ids=np.array(5))
        data = lines_of(tracker, "data_splits")[0]["data"]
        assert data["train"]["ids"] == [1, 2] and "val" not in data
        assert only(lezea_warnings(), "log_data_splits", "val_ids must be a list of ids", "ignored")

    def test_an_iterable_that_raises_keeps_what_was_read(self, tracker, lezea_warnings):
        def ids():
            yield "a"
            yield "b"
            raise OSError("disk went away")

        tracker.log_data_usage(ids(), epoch=1)
        tracker.log_lezea_config(hyperparameters={"layers": ids()})
        usage = lines_of(tracker, "data_usage")[0]["data"]
        assert usage["sample_ids"] == ["a", "b"] and usage["count"] == 2
        assert only(lezea_warnings(), "log_data_usage", "sample_ids raised while being read",
                    "the 2 items read were kept")
        assert lines_of(tracker, "config")  # a generator in free-form data is text, but the line is there

    def test_cyclic_and_exploding_data_are_bounded(self, tracker, lezea_warnings, monkeypatch):
        monkeypatch.setattr(values, "MAX_NODES", 2_000)  # the same bound as 100,000, reached sooner
        cyclic: list[Any] = [1]
        cyclic.append(cyclic)
        wide: Any = [0]
        for _ in range(6):
            wide = [wide] * 100  # 100**6 paths through 6 objects
        tracker.log_results(action_outputs={"cyclic": cyclic, "wide": wide})
        (line,) = lines_of(tracker, "results")
        assert line["data"]["action_outputs"]["cyclic"] == [1, "<cycle>"]
        assert only(lezea_warnings(), "log_results", "action_outputs contains itself")
        assert only(lezea_warnings(), "log_results", "action_outputs holds more than 2000 values")
        assert len(orjson.dumps(line["data"])) < 20_000

    def test_an_int_too_large_for_float_is_clamped(self, tracker, lezea_warnings):
        tracker.log_training_step(1, {"big": -(10**400)})
        assert lines_of(tracker, "training_step")[0]["data"]["metrics"] == {"big": -values.FLOAT_MAX}
        assert only(lezea_warnings(), "'big' is an integer beyond 64 bits", "clamped")


class TestShapingWarnings:
    def test_population_sizes_must_be_whole_and_not_negative(self, tracker, lezea_warnings):
        tracker.log_lezea_config(tasker_population_size=-4, builder_population_size=2.5)
        data = lines_of(tracker, "config")[0]["data"]
        assert data["tasker_population_size"] == -4 and data["builder_population_size"] == 2.5
        assert only(lezea_warnings(), "log_lezea_config", "tasker_population_size is negative",
                    "recorded as given")
        assert only(lezea_warnings(), "log_lezea_config", "builder_population_size is not a whole number")

    def test_a_dict_as_ids_warns_and_uses_its_keys(self, tracker, lezea_warnings):
        tracker.log_data_splits(train_ids={"s1": "cat", "s2": "dog"})
        assert lines_of(tracker, "data_splits")[0]["data"]["train"]["ids"] == ["s1", "s2"]
        assert only(lezea_warnings(), "log_data_splits", "train_ids is a dict", "keys were used")

    def test_a_negative_data_score_is_kept_and_explained(self, tracker, lezea_warnings):
        tracker.log_data_score("s1", before_loss=0.5, after_loss=0.75)
        assert lines_of(tracker, "data_score")[0]["data"]["score"] == -0.25
        assert only(lezea_warnings(), "log_data_score", "score (before_loss - after_loss) is negative",
                    "kept in the audit")

    def test_resource_warnings_name_the_parameter_the_user_passed(self, tracker, lezea_warnings):
        tracker.log_resource("worker", cpu=-1.0, gpu=-math.inf, mem=512.0)
        tracker.log_component_resources("net", gpu_util_percent=math.nan, cpu_percent=10.0)
        (short, long) = lines_of(tracker, "resource")
        assert short["data"]["cpu_percent"] is None and short["data"]["gpu_percent"] is None
        assert short["data"]["memory_mb"] == 512.0 and long["data"]["cpu_percent"] == 10.0
        messages = lezea_warnings()
        assert only(messages, "log_resource: cpu must be a finite number >= 0", "got -1.0; ignored")
        gpu = only(messages, "log_resource: gpu")
        assert len(gpu) == 1 and "-Infinity; ignored" in gpu[0]  # one warning, not "as is" then "ignored"
        assert only(messages, "log_component_resources: gpu_util_percent must be a finite number", "NaN")
        assert not only(messages, "cpu_percent") and not only(messages, "gpu_percent")


class TestLastLineOfDefence:
    def test_a_record_json_cannot_hold_is_written_repaired_and_counted(self, tmp_path):
        """Shaping is bypassed on purpose: the writer still writes the line, and says so once."""
        writer = AuditWriter(tmp_path / "events.jsonl")
        told: list[tuple[str, str]] = []
        writer.report = lambda problem, detail: told.append((problem, detail))
        bad = Record("checkpoint", 1, 2**70, ("scope\udcff",), 0, 0,
                     {"path": "a\udcffb", "n": 2**65, 3: Raising(), "nan": math.nan}, {"x\udcff": 2**80})
        writer.write(bad)
        writer.write(Record("comment", 2, None, (), 0, 0, {"text": "fine"}))
        writer.close()
        first, second = read_events(tmp_path / "events.jsonl")
        assert first["step"] is None and first["scope"] == "scope\ufffd"
        assert first["data"]["path"] == "a\ufffdb" and first["data"]["n"] == str(2**65)
        assert first["data"]["3"].startswith("Raising") and math.isnan(first["data"]["nan"])
        assert first["data"]["metrics"] == {"scope\ufffd/x\ufffd": float(2**80)}
        assert second["data"] == {"text": "fine"}
        assert writer.repaired == 1 and len(told) == 1 and "checkpoint" in told[0][0]
        assert bad.step is None  # the run state, which sees the record next, gets what the audit got


ODD = {"np64": lambda: np.float64(0.5), "npint": lambda: np.int64(-1), "tensor": lambda: torch.tensor(2.0),
       "raising": Raising, "class": ClassRaising, "badfloat": lambda: BadFloat(1.0),
       "0d": lambda: np.array(3)}
RECIPES = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers(min_value=-(2**130), max_value=2**130) | st.text()
    | st.binary(max_size=8) | st.sampled_from(["\udcff", "NaN"])
    | st.sampled_from(sorted(ODD)).map(lambda n: ("odd", n)),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=3) | st.integers() | st.just("\ud800"), inner, max_size=4),
    max_leaves=12)


def build(recipe: Any) -> Any:
    """The garbage a recipe names (hypothesis itself would call the broken reprs of the real objects)."""
    if isinstance(recipe, tuple):
        return ODD[recipe[1]]()
    if isinstance(recipe, list):
        return [build(item) for item in recipe]
    if isinstance(recipe, dict):
        return {key: build(item) for key, item in recipe.items()}
    return recipe


@settings(max_examples=60, deadline=None, database=None)
@given(recipe=RECIPES)
def test_plain_data_of_anything_is_one_json_line(recipe: Any) -> None:
    """Whatever the free-form data, its shaped form encodes (no ``default``), and describe() holds."""
    value = build(recipe)
    told: list[str] = []
    shaped = values.plain(value, "metadata", lambda problem, detail: told.append(problem))
    orjson.dumps(shaped)  # raises on a surrogate, an int past 64 bits or an unknown type
    assert isinstance(values.describe(value), str) and len(values.describe(value)) <= 110
    numbers = values.numbers({"k": value}, "metrics", lambda problem, detail: told.append(problem))
    assert all(type(v) is float for v in numbers.values())


def test_the_package_never_imports_numpy_or_torch() -> None:
    """numpy and torch values are recognised by their shape: a user without them (or with another
    version) pays nothing, and the tracker never loads them into the training process."""
    package = Path(values.__file__).resolve().parent.parent
    sources = {path: path.read_text() for path in package.rglob("*.py")}
    assert len(sources) > 40
    assert [path for path, source in sources.items()
            if "import numpy" in source or "import torch" in source] == []


@pytest.mark.parametrize("async_mode", [False, True])
def test_the_hot_path_shapes_what_it_cannot_pass_through(capture, async_mode, lezea_warnings):
    """The fast check of log_training_step lets only plain floats, 64-bit ints and ASCII keys through."""
    tracker = capture.tracker("hot", async_mode=async_mode, auto_start=True)
    tracker.log_training_step(1, {"loss": 0.5, "n": 2**64})
    tracker.log_training_step(2, {"loss": np.float64(0.4), "é": 1.0})
    tracker.log_training_step(np.uint64(3), {"loss": 0.3}, data_split="x" * 300)
    metrics = [line["data"]["metrics"] for line in lines_of(tracker, "training_step")]
    assert metrics == [{"loss": 0.5, "n": float(2**64)},
                       {"loss": 0.4, "é": 1.0, "delta_loss": pytest.approx(-0.1)},
                       {"loss": 0.3}]
    assert [line["step"] for line in lines_of(tracker, "training_step")] == [1, 2, 3]
    tracker.finalize_experiment()
    assert len(only(lezea_warnings(), "log_training_step")) == 2
