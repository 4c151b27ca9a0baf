"""Settings, resolved once per tracker: arguments > ``LEZEA_*`` > standard ``OTEL_*`` > defaults.

Nothing reads the environment after this. A bad value never raises here: it becomes a
*problem* (reported at ``start()``, raised there only in strict mode) and the default is used.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from . import names

Protocol = Literal["grpc", "http/protobuf"]
SIGNALS: Final = ("traces", "metrics", "logs")

# LEZEA_* variables. OTEL_* ones keep their standard names and meanings.
LEZEA_RUNS_DIR: Final = "LEZEA_RUNS_DIR"
LEZEA_STRICT: Final = "LEZEA_STRICT"
LEZEA_SERVICE_NAME: Final = "LEZEA_SERVICE_NAME"
LEZEA_OTLP_ENDPOINT: Final = "LEZEA_OTLP_ENDPOINT"
LEZEA_OTLP_PROTOCOL: Final = "LEZEA_OTLP_PROTOCOL"
LEZEA_METRIC_EXPORT_INTERVAL_MS: Final = "LEZEA_METRIC_EXPORT_INTERVAL_MS"
LEZEA_SHUTDOWN_TIMEOUT: Final = "LEZEA_SHUTDOWN_TIMEOUT"
LEZEA_PROMETHEUS_PORT: Final = "LEZEA_PROMETHEUS_PORT"
LEZEA_PROMETHEUS_ADDR: Final = "LEZEA_PROMETHEUS_ADDR"
LEZEA_OBSERVERS: Final = "LEZEA_OBSERVERS"
LEZEA_OBSERVE_INTERVAL: Final = "LEZEA_OBSERVE_INTERVAL"
LEZEA_GPUS: Final = "LEZEA_GPUS"
LEZEA_SCOPE_RESOURCES: Final = "LEZEA_SCOPE_RESOURCES"
LEZEA_PROGRESS_AFTER: Final = "LEZEA_PROGRESS_AFTER"
LEZEA_PROGRESS_EVERY: Final = "LEZEA_PROGRESS_EVERY"
LEZEA_AUDIT_FSYNC: Final = "LEZEA_AUDIT_FSYNC"
AUDIT_FSYNC_POLICIES: Final = ("interval", "always", "finalize")
LEZEA_QUIET: Final = "LEZEA_QUIET"
LEZEA_COST_LIMIT_EUR: Final = "LEZEA_COST_LIMIT_EUR"
LEZEA_MAX_METRIC_NAMES: Final = "LEZEA_MAX_METRIC_NAMES"
LEZEA_ENV_ALLOWLIST: Final = "LEZEA_ENV_ALLOWLIST"
LEZEA_CHECKPOINT_HASH_MAX_MB: Final = "LEZEA_CHECKPOINT_HASH_MAX_MB"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class _Invalid(ValueError):
    """A value that cannot be used; the message names what was expected."""


def _bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _Invalid("expected true/false")


def _positive_float(raw: Any) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise _Invalid("expected a positive number") from None
    if not value > 0 or value == float("inf"):
        raise _Invalid("expected a positive number")
    return value


def _port(raw: Any) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise _Invalid("expected a port number 0-65535") from None
    if not 0 <= value <= 65535:
        raise _Invalid("expected a port number 0-65535")
    return value or None


def _positive_int(raw: Any) -> int:
    value = _positive_float(raw)
    if value != int(value):
        raise _Invalid("expected a positive integer")
    return int(value)


def _protocol(raw: Any) -> Protocol:
    text = str(raw).strip().lower()
    if text == "grpc":
        return "grpc"
    if text in ("http/protobuf", "http"):
        return "http/protobuf"
    raise _Invalid("expected 'grpc' or 'http/protobuf'")


def _fsync(raw: Any) -> str:
    text = str(raw).strip().lower()
    if text not in AUDIT_FSYNC_POLICIES:
        raise _Invalid("expected one of " + ", ".join(AUDIT_FSYNC_POLICIES))
    return text


def _endpoint(raw: Any) -> str:
    text = str(raw).strip()
    if "://" not in text:
        raise _Invalid("expected a URL such as http://localhost:4318")
    return text


def _timeout_ms(raw: Any) -> float:
    """The specification's OTEL_EXPORTER_OTLP_*TIMEOUT is in milliseconds (the Python SDK reads seconds)."""
    return _positive_float(raw) / 1000


def _headers(raw: Any) -> dict[str, str]:
    text = str(raw)
    pairs = [pair for pair in text.split(",") if pair.strip()]
    if any("=" not in pair or not pair.split("=", 1)[0].strip() for pair in pairs):
        raise _Invalid("expected comma-separated key=value pairs, values URL-encoded")
    from opentelemetry.util.re import parse_env_headers

    return parse_env_headers(text, liberal=True)


def _compression(raw: Any) -> str:
    text = str(raw).strip().lower()
    if text not in ("gzip", "none"):
        raise _Invalid("expected 'gzip' or 'none'")
    return text


def _certificate(raw: Any) -> str:
    if not Path(str(raw)).is_file():
        raise _Invalid("no such file")
    return str(raw)


# Checked for every signal sent over OTLP; per-signal variables win over the generic ones. Timeout and
# headers are handed to the exporters; the others they read themselves, with the same meaning.
_OTLP_OPTIONS: dict[str, tuple[Callable[[Any], Any], Any]] = {
    "timeout": (_timeout_ms, 10.0),
    "headers": (_headers, {}),
    "compression": (_compression, "none"),
    "insecure": (_bool, False),
    "certificate": (_certificate, None),
}


_LEVELS = {"builder", "tasker", "algorithm", "network", "layer", "phase"}


def _levels(raw: Any) -> frozenset[str]:
    text = str(raw).strip().lower()
    if text in ("none", "off", ""):
        return frozenset()
    if text == "all":
        return frozenset(_LEVELS)
    levels = frozenset(v.strip() for v in text.split(",") if v.strip())
    if not levels <= _LEVELS:
        raise _Invalid(f"expected a comma list of {', '.join(sorted(_LEVELS))}, 'all' or 'none'")
    return levels


def _gpus(raw: Any) -> str:
    text = str(raw).strip()
    if text.lower() in ("job", "all"):
        return text.lower()
    if all(part.strip().startswith(("GPU-", "MIG-")) for part in text.split(",") if part.strip()):
        return text
    raise _Invalid("expected 'job', 'all' or a comma list of GPU-/MIG- UUIDs")


@dataclass(frozen=True)
class Settings:
    """The resolved configuration of one tracker; ``sources`` says where each value came from."""

    runs_dir: Path = Path("runs")
    service_name: str = names.DEFAULT_SERVICE_NAME
    strict: bool = False
    quiet: bool = False
    sdk_disabled: bool = False
    endpoint: str | None = None
    """Set only when given as argument or LEZEA_OTLP_ENDPOINT; OTEL_* endpoints stay with the exporters."""
    otlp_signals: frozenset[str] = frozenset()
    """Signals sent over OTLP (an endpoint is configured and the signal's exporter is not 'none')."""
    protocol: Protocol = "http/protobuf"
    metric_export_interval_ms: float = 15_000.0
    shutdown_timeout_s: float = 5.0
    prometheus_port: int | None = None
    prometheus_addr: str = "127.0.0.1"
    cost_limit_eur: float | None = None
    max_metric_names: int = 256
    env_allowlist: tuple[str, ...] = ()
    checkpoint_hash_max_bytes: int = 64 * 2**20
    observers: bool = True
    observe_interval_s: float = 10.0
    gpus: str = "job"
    scope_resources: frozenset[str] = frozenset({"builder", "tasker", "algorithm", "network", "phase"})
    """Scope levels (and ``phase``) whose spans get resource summaries; ``layer`` is off: layers are many."""
    progress_after_s: float = 60.0
    """Scopes open longer than this get ``lezea.progress`` marker spans..."""
    progress_every_s: float = 60.0
    """...at this cadence."""
    audit_fsync: str = "interval"
    otlp_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Per signal: ``timeout`` (seconds) and ``headers`` for the OTLP exporter, from the spec's variables."""
    problems: tuple[str, ...] = ()
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def local_only(self) -> bool:
        return not self.otlp_signals


class _Resolver:
    def __init__(self, arguments: Mapping[str, Any], environ: Mapping[str, str]) -> None:
        self._arguments = arguments
        self._environ = environ
        self.problems: list[str] = []
        self.sources: dict[str, str] = {}

    def get(self, name: str, env_vars: tuple[str, ...], default: Any, parse: Callable[[Any], Any]) -> Any:
        candidates: list[tuple[str, Any]] = []
        if self._arguments.get(name) is not None:
            candidates.append((f"argument {name}", self._arguments[name]))
        candidates += [(var, self._environ[var]) for var in env_vars if self._environ.get(var, "").strip()]
        for source, raw in candidates:
            try:
                value = parse(raw)
            except _Invalid as problem:
                shown = "(value hidden: headers carry credentials)" if source.endswith("HEADERS") else repr(raw)
                message = f"{source}={shown} is invalid ({problem}); using the default {default!r}"
                if message not in self.problems:  # a generic OTLP variable is checked once per signal
                    self.problems.append(message)
                break
            self.sources[name] = source
            return value
        self.sources[name] = "default"
        return default


def resolve_settings(arguments: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Settings:
    """Resolve every setting once; never raises (bad values become ``Settings.problems``)."""
    env = os.environ if environ is None else environ
    r = _Resolver(arguments, env)
    protocol = r.get("protocol", (LEZEA_OTLP_PROTOCOL, "OTEL_EXPORTER_OTLP_PROTOCOL"), "http/protobuf", _protocol)
    endpoint = r.get("endpoint", (LEZEA_OTLP_ENDPOINT,), None, _endpoint)
    generic_env_endpoint = r.get("otel_endpoint", ("OTEL_EXPORTER_OTLP_ENDPOINT",), None, _endpoint)
    sdk_disabled = r.get("sdk_disabled", ("OTEL_SDK_DISABLED",), False, _bool)
    otlp_signals = set()
    for signal in SIGNALS:
        upper = signal.upper()
        own = r.get(f"{signal}_endpoint", (f"OTEL_EXPORTER_OTLP_{upper}_ENDPOINT",), None, _endpoint)
        exporter = env.get(f"OTEL_{upper}_EXPORTER", "otlp").strip().lower() or "otlp"
        if exporter not in ("otlp", "none"):
            r.problems.append(
                f"OTEL_{upper}_EXPORTER={exporter!r} is not supported (expected 'otlp' or 'none'); using 'otlp'"
            )
        if (endpoint or generic_env_endpoint or own) and exporter != "none" and not sdk_disabled:
            otlp_signals.add(signal)
    otlp_options = {}
    for signal in sorted(otlp_signals):
        variables = (f"OTEL_EXPORTER_OTLP_{signal.upper()}_", "OTEL_EXPORTER_OTLP_")
        values = {option: r.get(f"{signal}_{option}", tuple(v + option.upper() for v in variables), default,
                                parse)
                  for option, (parse, default) in _OTLP_OPTIONS.items()}
        otlp_options[signal] = {"timeout": values["timeout"], "headers": values["headers"]}
    cost_limit = r.get("cost_limit_eur", (LEZEA_COST_LIMIT_EUR,), None, _positive_float)
    settings = Settings(
        runs_dir=Path(r.get("runs_dir", (LEZEA_RUNS_DIR,), "runs", str)),
        service_name=r.get(
            "service_name", (LEZEA_SERVICE_NAME, "OTEL_SERVICE_NAME"), names.DEFAULT_SERVICE_NAME, str
        ),
        strict=r.get("strict", (LEZEA_STRICT,), False, _bool),
        quiet=r.get("quiet", (LEZEA_QUIET,), False, _bool),
        sdk_disabled=sdk_disabled,
        endpoint=endpoint,
        otlp_signals=frozenset(otlp_signals),
        protocol=protocol,
        metric_export_interval_ms=r.get(
            "metric_export_interval_ms",
            (LEZEA_METRIC_EXPORT_INTERVAL_MS, "OTEL_METRIC_EXPORT_INTERVAL"),
            15_000.0,
            _positive_float,
        ),
        shutdown_timeout_s=r.get("shutdown_timeout_s", (LEZEA_SHUTDOWN_TIMEOUT,), 5.0, _positive_float),
        prometheus_port=r.get("prometheus_port", (LEZEA_PROMETHEUS_PORT,), None, _port),
        prometheus_addr=r.get("prometheus_addr", (LEZEA_PROMETHEUS_ADDR,), "127.0.0.1", str),
        cost_limit_eur=cost_limit,
        max_metric_names=r.get("max_metric_names", (LEZEA_MAX_METRIC_NAMES,), 256, _positive_int),
        env_allowlist=tuple(
            v.strip() for v in str(r.get("env_allowlist", (LEZEA_ENV_ALLOWLIST,), "", str)).split(",") if v.strip()
        ),
        checkpoint_hash_max_bytes=int(
            r.get("checkpoint_hash_max_mb", (LEZEA_CHECKPOINT_HASH_MAX_MB,), 64.0, _positive_float) * 2**20
        ),
        observers=r.get("observers", (LEZEA_OBSERVERS,), True, _bool),
        observe_interval_s=r.get("observe_interval_s", (LEZEA_OBSERVE_INTERVAL,), 10.0, _positive_float),
        gpus=r.get("gpus", (LEZEA_GPUS,), "job", _gpus),
        scope_resources=r.get("scope_resources", (LEZEA_SCOPE_RESOURCES,),
                              frozenset({"builder", "tasker", "algorithm", "network", "phase"}), _levels),
        progress_after_s=r.get("progress_after_s", (LEZEA_PROGRESS_AFTER,), 60.0, _positive_float),
        progress_every_s=r.get("progress_every_s", (LEZEA_PROGRESS_EVERY,), 60.0, _positive_float),
        otlp_options=otlp_options,
        audit_fsync=r.get("audit_fsync", (LEZEA_AUDIT_FSYNC,), "interval", _fsync),
        problems=tuple(r.problems),
        sources=dict(r.sources),
    )
    return settings
