"""Objects a hostile or sloppy user hands the tracker: broken proxies, odd subclasses, failing iterables.

Shared by the value, call-safety and fuzz tests; each mimics something real (a lazy proxy whose
attribute probes raise, a numpy-like float subclass, a generator that fails part-way).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class Raising:
    """A broken proxy: every dunder and every attribute probe raises."""

    def __repr__(self) -> str:
        raise RuntimeError("repr")

    def __str__(self) -> str:
        raise RuntimeError("str")

    def __len__(self) -> int:
        raise RuntimeError("len")

    def __bool__(self) -> bool:
        raise RuntimeError("bool")

    def __iter__(self) -> Any:
        raise RuntimeError("iter")

    def __float__(self) -> float:
        raise RuntimeError("float")

    def __index__(self) -> int:
        raise RuntimeError("index")

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"getattr {name}")


class ClassRaising:
    """A proxy whose ``__class__`` raises: ``isinstance`` itself fails on it."""

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        raise RuntimeError("__class__")


class BadText:
    """An object whose ``__str__`` and ``__repr__`` raise (and nothing else)."""

    def __str__(self) -> str:
        raise RuntimeError("no str")

    __repr__ = __str__


class BadBool:
    def __bool__(self) -> bool:
        raise RuntimeError("no truth value")


class BadHash:
    def __hash__(self) -> int:
        raise RuntimeError("no hash")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no eq")

    def __str__(self) -> str:
        return "odd-type"


class BadFloat(float):
    """A float subclass (as ``np.float64`` is) whose ``repr`` raises."""

    def __repr__(self) -> str:
        raise RuntimeError("repr")


class BadInt(int):
    def __str__(self) -> str:
        raise RuntimeError("str")


def failing_generator() -> Iterator[str]:
    """Yields one item, then fails: what was read must be kept."""
    yield "first"
    raise RuntimeError("the generator broke")
