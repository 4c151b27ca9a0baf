"""The tree reads as the architecture: imports point down the layers, siblings never import each other.

An AST pass over every module of the package: each module belongs to a layer (a package or a module
directly under ``lezea_otel``), and may import only from its own layer or the layers below it; the
trainer side and the exporter side are siblings and never import each other.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "lezea_otel"

# Top to bottom. A layer may import from itself and the layers after it; the two sides of a run
# (one row) are siblings: neither imports the other.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("cli",), ("mixin",), ("testing", "integrations"), ("tracker", "analysis"), ("trainer", "exporter"),
    ("model",), ("audit",),
    ("config",), ("util",),
    ("semconv",), ("exceptions", "version"),
)
TRAINER_MAY_NOT_IMPORT = ("opentelemetry.sdk", "opentelemetry.exporter")
"""The training process (the facade and its parts) never loads the OTel SDK: the exporter does."""
TRAINER_MODULES = ("tracker", "trainer", "model", "audit", "config", "util", "semconv")


def _rank(layer: str) -> int:
    return next(index for index, row in enumerate(LAYERS) if layer in row)


def _layer(module: Path) -> str:
    relative = module.relative_to(PACKAGE)
    return relative.parts[0].removesuffix(".py") if relative.parts[0] != "__init__.py" else "__init__"


def _imports(module: Path) -> list[tuple[str, bool]]:
    """(absolute module name, lazily inside a function) of each import of ``module``."""
    tree = ast.parse(module.read_text())
    package = ".".join(("lezea_otel", *module.relative_to(PACKAGE).with_suffix("").parts[:-1]))
    lazy_nodes = {id(node) for function in ast.walk(tree) if isinstance(function, (ast.FunctionDef,
                                                                                   ast.AsyncFunctionDef))
                  for node in ast.walk(function)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in lazy_nodes) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.append((base, id(node) in lazy_nodes))
    return found


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_import_points_down_the_layers() -> None:
    wrong = []
    for module in _modules():
        layer = _layer(module)
        if layer in ("__init__", "__main__"):
            continue
        for name, _lazy in _imports(module):
            if name.startswith("lezea_otel."):
                target = name.split(".")[1]
                if target != layer and (_rank(target) <= _rank(layer)):
                    wrong.append(f"{module.relative_to(PACKAGE)} imports {name}")
    assert wrong == []


def test_the_trainer_side_never_loads_the_sdk_at_import() -> None:
    """Only the exporter imports the OTel SDK; the trainer imports it at most lazily (thread mode)."""
    wrong = [f"{module.relative_to(PACKAGE)} imports {name}"
             for module in _modules() if _layer(module) in TRAINER_MODULES
             for name, lazy in _imports(module) if not lazy and name.startswith(TRAINER_MAY_NOT_IMPORT)]
    assert wrong == []


TRAINING_PROCESS_MODULES = 45
"""``import lezea_otel`` today: the facade, the trainer side, the record path and what they use. A change
that loads more says so here (and why a training process needs it)."""


def test_import_lezea_otel_loads_the_write_path_only():
    """A training process that imports the package loads the facade, the trainer side and the record's path
    to the audit (``model``): no CLI, run analysis, exporter, mixin or integration, no OTel SDK, no torch."""
    code = ("import json, sys, lezea_otel; print(json.dumps(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('lezea_otel', 'opentelemetry', 'torch'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(done.stdout)
    ours = [m for m in loaded if m.startswith("lezea_otel")]
    layers = {m.split(".")[1] for m in ours if "." in m}
    assert layers & {"cli", "analysis", "exporter", "mixin", "integrations", "testing"} == set(), layers
    assert [m for m in loaded if m.startswith(("opentelemetry.sdk", "torch"))] == []
    assert len(ours) <= TRAINING_PROCESS_MODULES, ours
