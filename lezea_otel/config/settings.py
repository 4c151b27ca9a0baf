"""Settings, resolved once per tracker from the declared table (:mod:`.parameters`):
arguments > ``LEZEA_*`` > standard ``OTEL_*`` > defaults.

Settings are read from the environment here only (the exporter process resolves its own from the
environment it inherited). A bad value never raises here: it becomes a *problem* (reported at
``start()``, raised there only in strict mode) and the default, or the value clamped into its bounds,
is used. Variables the OTel SDK reads itself are checked too, and an unusable one is corrected in this
process's environment before the SDK can trip over it (some are read when the SDK is imported: in the
exporter, and in a training process only in thread mode or when the user's own code loads it).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final, Literal

from lezea_otel.config.parameters import BY_NAME, PARAMETERS, SIGNALS, Parameter
from lezea_otel.config.parsers import Adjusted, Invalid
from lezea_otel.util.safety import raise_internal

Protocol = Literal["grpc", "http/protobuf"]
_OTLP_KWARGS: Final = ("timeout", "headers")  # what the exporters are given; they read the rest themselves


@dataclass(frozen=True)
class Settings:
    """The resolved configuration of one tracker; ``sources`` says where each value came from.

    Every field named like a parameter of :data:`.parameters.PARAMETERS` holds its value (defaults
    live there only); the others are derived from them.
    """

    runs_dir: Path
    service_name: str
    strict: bool
    quiet: bool
    sdk_disabled: bool
    exporter_mode: str
    otel_context: str
    endpoint: str | None
    """Set only when given as argument or LEZEA_OTLP_ENDPOINT; OTEL_* endpoints stay with the exporters."""
    otel_endpoint: str | None
    protocol: Protocol
    metric_export_interval_ms: float
    shutdown_timeout_s: float
    finish_window_s: float
    prometheus_port: int | None
    prometheus_addr: str
    cost_limit_eur: float | None
    max_metric_names: int
    env_allowlist: tuple[str, ...]
    checkpoint_hash_max_bytes: int
    observers: bool
    observe_interval_s: float
    gpus: str
    scope_resources: frozenset[str]
    phase_memory: bool
    gpu_timing: str
    gpu_sync: bool
    nvtx: bool
    """Scope levels (and ``phase``) whose spans get resource summaries; ``layer`` is off: layers are many."""
    progress_after_s: float
    """Scopes open longer than this get ``lezea.progress`` marker spans..."""
    progress_every_s: float
    """...at this cadence."""
    audit_fsync: str
    experiment_id: str | None
    rank: int | None
    local_rank: int | None
    world_size: int | None
    local_world_size: int | None
    node_rank: int | None
    role_rank: int | None
    launch_id: str | None
    slurm_job: str | None
    slurm_step: str | None
    slurm_array: str | None
    slurm_array_task: str | None
    restart_attempt: int
    span_ranks: str
    parent_run: str | None
    traceparent: str | None
    bsp_schedule_delay_ms: int
    bsp_max_queue_size: int
    bsp_max_export_batch_size: int
    blrp_schedule_delay_ms: int
    blrp_max_queue_size: int
    blrp_max_export_batch_size: int
    otlp_signals: frozenset[str] = frozenset()
    """Signals sent over OTLP (an endpoint is configured and the signal's exporter is not 'none')."""
    otlp_endpoints: Mapping[str, str] = field(default_factory=dict)
    """Per OTLP signal, the URL configured for it (argument, LEZEA_*, per-signal or generic variable)."""
    otlp_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Per signal: ``timeout`` (seconds) and ``headers`` for the OTLP exporter, from the spec's variables."""
    signal_values: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Per signal, every per-signal parameter checked for it (for ``doctor``)."""
    sdk: Mapping[str, Any] = field(default_factory=dict)
    """Parameters without a field of their own (read by the SDK or the exporters): value by name."""
    exporter_fixes: Mapping[str, str | None] = field(default_factory=dict)
    """Exporter variables found unusable, and what the exporters are shown instead (None: nothing)."""
    problems: tuple[str, ...] = ()
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def local_only(self) -> bool:
        return not self.otlp_signals

    def export_queue(self, signal: str) -> dict[str, int]:
        """The OTLP export queue's options for ``traces`` (``OTEL_BSP_*``) or ``logs`` (``OTEL_BLRP_*``)."""
        prefix = {"traces": "bsp", "logs": "blrp"}[signal]
        return {option: getattr(self, f"{prefix}_{option}")
                for option in ("schedule_delay_ms", "max_queue_size", "max_export_batch_size")}

    def rows(self) -> list[tuple[str, str, str]]:
        """``(variables, value, source)`` per parameter, in table order: what ``doctor`` prints.
        Unused ones (OTLP options in local mode) are left out; SDK ones only when set."""
        out: list[tuple[str, str, str]] = []
        for parameter in PARAMETERS:
            label = ", ".join(parameter.variables)
            if parameter.per_signal:
                same: dict[tuple[str, str], list[str]] = {}  # signals with one value and source share a row
                for signal, values in self.signal_values.items():
                    if parameter.name in values:
                        shown = (_shown(parameter, values[parameter.name]),
                                 self.sources.get(f"{signal}_{parameter.name}", "default"))
                        same.setdefault(shown, []).append(signal)
                out += [(f"{label} ({', '.join(signals)})", *shown) for shown, signals in same.items()]
            elif parameter.name in self.sdk:
                source = self.sources.get(parameter.name, "default")
                if source != "default":
                    out.append((label, _shown(parameter, self.sdk[parameter.name]), source))
            elif parameter.name in _FIELDS:
                out.append((label, _shown(parameter, getattr(self, parameter.name)),
                            self.sources.get(parameter.name, "default")))
        return out


_FIELDS: Final = frozenset(f.name for f in fields(Settings))


def _shown(parameter: Parameter, value: Any) -> str:
    """A value as ``doctor`` prints it: in the unit its variable is written in (MB, not bytes)."""
    value = parameter.written(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if parameter.name.endswith("headers"):
        return "(hidden)" if value else "none"
    if isinstance(value, frozenset):
        return ",".join(sorted(value)) or "none"
    if isinstance(value, tuple):
        return ",".join(value) or "none"
    return "unset" if value is None else str(value)


class _Resolver:
    def __init__(self, arguments: Mapping[str, Any], environ: Mapping[str, str]) -> None:
        self._arguments = arguments
        self._environ = environ
        self.problems: list[str] = []
        self.sources: dict[str, str] = {}
        self.rejected: dict[str, str | None] = {}
        self._reported: set[str] = set()

    def get(self, parameter: Parameter, signal: str | None = None) -> Any:
        """The parameter's value (in its ``Settings`` unit), from the first candidate that is set.

        An unusable candidate is a problem and the default is used; for the exporters' variables
        the next one set is tried instead, as the exporters themselves will once it is hidden."""
        key = f"{signal}_{parameter.name}" if signal else parameter.name
        candidates: list[tuple[str, Any]] = []
        if parameter.argument and self._arguments.get(parameter.name) is not None:
            candidates.append((f"argument {parameter.name}", self._arguments[parameter.name]))
        candidates += [(var, self._environ[var]) for var in parameter.variables_for(signal)
                       if self._environ.get(var, "").strip()]
        exporter = parameter.reader == "exporter"
        for index, (source, raw) in enumerate(candidates):
            try:
                value = _parse(parameter, source, raw)
            except Adjusted as adjusted:
                self._problem(source, raw, f"{adjusted}; using {_plain(adjusted.value)}", parameter)
                if exporter:
                    self.rejected[source] = parameter.render(adjusted.value)
                value = adjusted.value
            except Invalid as problem:
                later = next((s for s, _ in candidates[index + 1:]), None) if exporter else None
                if later and signal:  # a generic variable is checked per signal: name the next one so
                    later = later.replace(f"_{signal.upper()}_", "_{SIGNAL}_")
                used = f"{later} instead" if later else f"the default {_plain(parameter.default)}"
                self._problem(source, raw, f"is invalid ({problem}); using {used}", parameter)
                if exporter:
                    self.rejected[source] = None  # hidden from the exporters, which then read what we use
                if later:
                    continue
                break
            self.sources[key] = source
            return parameter.setting(value)
        self.sources[key] = "default"
        return parameter.setting(parameter.default)

    def _problem(self, source: str, raw: Any, what: str, parameter: Parameter) -> None:
        if source in self._reported:  # a generic OTLP variable is checked once per signal, reported once
            return
        self._reported.add(source)
        shown = "(value hidden: headers carry credentials)" if parameter.name == "headers" else _repr(raw)
        self.problems.append(f"{source}={shown} {what}")


def _parse(parameter: Parameter, source: str, raw: Any) -> Any:
    try:
        return parameter.parse(raw)
    except (Adjusted, Invalid):
        raise
    except Exception as error:  # an argument whose __fspath__ or __float__ raises; for a variable, our bug
        if raise_internal() and not source.startswith("argument"):
            raise
        raise Invalid(f"could not be read: {type(error).__name__}") from None


def _repr(raw: Any) -> str:
    try:
        shown = repr(raw)
    except Exception:  # noqa: BLE001 - a user's object whose __repr__ raises
        return f"<{type(raw).__name__}>"
    return shown if len(shown) <= 200 else shown[:200] + "..."


def _plain(value: Any) -> str:
    if isinstance(value, frozenset):
        return repr(",".join(sorted(value)))
    if isinstance(value, tuple):
        return repr(",".join(value))
    return repr(value)


def resolve_settings(arguments: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Settings:
    """Resolve every setting once; never raises (bad values become ``Settings.problems``).

    With ``environ=None`` the process environment is read, after :func:`guard_sdk_environment`.
    """
    if environ is None:
        guard_sdk_environment()
        environ = as_set(os.environ)
    r = _Resolver(arguments, environ)
    values: dict[str, Any] = {}
    sdk: dict[str, Any] = {}
    for parameter in PARAMETERS:
        if parameter.per_signal or parameter.with_otlp:
            continue
        (values if parameter.name in _FIELDS else sdk)[parameter.name] = r.get(parameter)
    signal_values: dict[str, dict[str, Any]] = {}
    otlp_signals: set[str] = set()
    for signal in SIGNALS:
        own = signal_values.setdefault(signal, {})
        own["signal_endpoint"] = r.get(BY_NAME["signal_endpoint"], signal)
        own["exporter"] = r.get(BY_NAME["exporter"], signal)
        configured = values["endpoint"] or values["otel_endpoint"] or own["signal_endpoint"]
        if configured and own["exporter"] != "none" and not values["sdk_disabled"]:
            otlp_signals.add(signal)
    for signal in sorted(otlp_signals):
        for parameter in PARAMETERS:
            if parameter.per_signal and parameter.with_otlp:
                signal_values[signal][parameter.name] = r.get(parameter, signal)
    for parameter in PARAMETERS:
        if otlp_signals and parameter.with_otlp and not parameter.per_signal:
            sdk[parameter.name] = r.get(parameter)
    _check_ranks(values, r)
    return Settings(
        **values,
        otlp_signals=frozenset(otlp_signals),
        otlp_endpoints={signal: _endpoint_of(signal, values, signal_values[signal])
                        for signal in sorted(otlp_signals)},
        otlp_options={signal: {option: signal_values[signal][option] for option in _OTLP_KWARGS}
                      for signal in sorted(otlp_signals)},
        signal_values=signal_values,
        sdk=sdk,
        exporter_fixes=dict(r.rejected),
        problems=tuple(r.problems),
        sources=dict(r.sources),
    )


def _endpoint_of(signal: str, values: Mapping[str, Any], own: Mapping[str, Any]) -> str:
    """Where a signal goes, by the exporters' rules: ours, else the per-signal URL, else the base URL."""
    base: str | None = values["endpoint"] or (None if own["signal_endpoint"] else values["otel_endpoint"])
    if base is None:
        return str(own["signal_endpoint"])
    return base.rstrip("/") + f"/v1/{signal}" if values["protocol"] != "grpc" else base


def _check_ranks(values: dict[str, Any], r: _Resolver) -> None:
    """A rank must be below its world size; one that is not is dropped (one problem), the size kept."""
    pairs = (("rank", "world_size"), ("local_rank", "local_world_size"), ("local_rank", "world_size"))
    for name, size in pairs:
        rank, world = values[name], values[size]
        if world is not None and rank is not None and rank >= world:
            r.problems.append(f"{r.sources.get(name)}={str(rank)!r} is not below {r.sources.get(size)}="
                              f"{str(world)!r}; using the default None (no {name} recorded)")
            values[name] = None


# --- the SDK's own variables -----------------------------------------------------------------

_lock = threading.Lock()
_corrected: dict[str, tuple[str, str | None]] = {}
"""Variable -> (what the user set, what the SDK is shown now; None: removed)."""


def as_set(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment as the user set it: our corrections undone (those still in place)."""
    view = dict(environ)
    with _lock:
        for variable, (original, shown) in list(_corrected.items()):
            if view.get(variable) == shown:
                view[variable] = original
            else:  # changed since: the new value is the user's
                del _corrected[variable]
    return view


def guard_sdk_environment() -> None:
    """Corrects each variable the SDK reads itself whose value would make it raise, spin or
    misread (``OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT=abc`` fails ``import opentelemetry.sdk.trace``):
    it is set to the value we use (the default, or the clamped value) or, where no value means
    "unset", removed. Runs at ``import lezea_otel`` and in every tracker's constructor; the
    problem itself is reported by :func:`resolve_settings`. Never raises."""
    try:
        environ = as_set(os.environ)
        fixes: dict[str, tuple[str, str | None]] = {}
        for parameter in PARAMETERS:
            if parameter.reader != "sdk":
                continue
            for variable in parameter.variables_for():
                raw = environ.get(variable)
                if raw is None:
                    continue
                shown = _as_the_sdk_reads_it(parameter, raw)
                if shown != raw:
                    fixes[variable] = (raw, shown)
        with _lock:
            for variable, (raw, shown) in fixes.items():
                if shown is None:
                    os.environ.pop(variable, None)
                else:
                    os.environ[variable] = shown
                _corrected[variable] = (raw, shown)
    except Exception:
        if raise_internal():
            raise


def _as_the_sdk_reads_it(parameter: Parameter, raw: str) -> str | None:
    if not raw.strip():  # empty means unset (the specification's rule; the SDK reads some as "no limit")
        return parameter.render(parameter.default)
    try:
        return parameter.render(parameter.parse(raw))
    except Adjusted as adjusted:
        return parameter.render(adjusted.value)
    except Invalid:
        return parameter.render(parameter.default)


@contextmanager
def exporter_environment(settings: Settings) -> Iterator[None]:
    """While the OTLP exporters are built: the exporter variables found unusable are hidden from
    them (they read the environment in their constructors and would fail, or send garbage)."""
    saved: dict[str, str | None] = {}
    with _lock:
        for variable, instead in settings.exporter_fixes.items():
            saved[variable] = os.environ.get(variable)
            if instead is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = instead
    try:
        yield
    finally:
        with _lock:
            for variable, value in saved.items():
                if value is None:
                    os.environ.pop(variable, None)
                else:
                    os.environ[variable] = value
