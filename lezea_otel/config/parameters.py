"""The declared configuration: every setting and every variable read, written once, here.

Each :class:`Parameter` names its variables (highest precedence first), its default (in the unit a
user writes), a parser with bounds (:mod:`.parsers`) and a one-line doc. :mod:`.settings` resolves
them, ``lezea-otel doctor`` lists them and README's configuration table is generated from them
(``python -m lezea_otel.config.parameters``), so none of the three can drift from the others.
Nothing here imports OpenTelemetry: :func:`.settings.guard_sdk_environment` runs before the SDK loads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from lezea_otel import semconv as names
from lezea_otel.config.parsers import (
    AUDIT_FSYNC_POLICIES,
    DAY_MS,
    DAY_S,
    LIMIT_MAX,
    Choice,
    EntryPoints,
    Number,
    existing_file,
    flag,
    gpus,
    headers,
    identifier,
    levels,
    path,
    port,
    resource_attributes,
    span_ranks,
    status_codes,
    text,
    traceparent,
    url,
    variable_names,
)

SIGNALS: Final = ("traces", "metrics", "logs")
EXPORTER_MODES: Final = ("process", "thread", "none")
OTEL_CONTEXT_MODES: Final = ("auto", "always", "never")
GPU_TIMING_MODES: Final = ("phases", "scopes", "off")


@dataclass(frozen=True)
class Parameter:
    """One setting: where it is read from, its default, how it is checked, what it means."""

    name: str
    """The ``Settings`` attribute (per signal: the key); for one only the SDK uses, its variable."""
    variables: tuple[str, ...]
    """Highest precedence first; ``{SIGNAL}`` stands for TRACES, METRICS or LOGS (resolved per signal)."""
    default: Any
    """In the unit a user writes; written here and nowhere else."""
    parse: Callable[[Any], Any]
    doc: str
    reader: str = "lezea"
    """Who reads the variables. ``lezea``: only us. ``exporter``: the OTLP exporters too, in their
    constructors; an unusable value is hidden from them while they are built. ``sdk``: the SDK too,
    at import or whenever it likes; an unusable value is corrected in this process's environment
    before the SDK can read it (see :func:`.settings.guard_sdk_environment`)."""
    with_otlp: bool = False
    """Checked only for the signals sent over OTLP (unused, and so unchecked, in local mode)."""
    argument: bool = False
    """A constructor argument of this name beats the variables."""
    convert: Callable[[Any], Any] | None = None
    """From the unit a user writes to the one ``Settings`` holds (ms to s, MB to bytes)."""
    convert_back: Callable[[Any], Any] | None = None
    """The inverse of ``convert``: ``doctor`` shows a value in the unit its variable is written in."""
    shown: str | None = None
    """README's rendering of the default, where the value itself would not say it well."""
    unset: str | None = ""
    """For the SDK: what stands for "no value" in the environment (``None``: the variable is removed)."""

    @property
    def per_signal(self) -> bool:
        return any("{SIGNAL}" in variable for variable in self.variables)

    def variables_for(self, signal: str | None = None) -> tuple[str, ...]:
        """The variables of one signal, or with ``None`` all of them."""
        if signal is None:
            if not self.per_signal:
                return self.variables
            return tuple(dict.fromkeys(v for s in SIGNALS for v in self.variables_for(s)))
        return tuple(dict.fromkeys(v.replace("{SIGNAL}", signal.upper()) for v in self.variables))

    def setting(self, value: Any) -> Any:
        """The value as ``Settings`` holds it."""
        return self.convert(value) if self.convert is not None and value is not None else value

    def written(self, value: Any) -> Any:
        """A value ``Settings`` holds, in the unit a user writes it in (what ``doctor`` shows)."""
        return self.convert_back(value) if self.convert_back is not None and value is not None else value

    def render(self, value: Any) -> str | None:
        """The value as the SDK reads it from the environment."""
        if value is None:
            return self.unset
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)


def _ms_to_s(value: float) -> float:
    return value / 1000


def _mb_to_bytes(value: float) -> int:
    return int(value * 2**20)


def _s_to_ms(value: float) -> float:
    return value * 1000


def _bytes_to_mb(value: int) -> float:
    return value / 2**20


def _limit(variable: str, default: int | None, what: str) -> Parameter:
    return Parameter(variable.lower(), (variable,), default, Number(0, LIMIT_MAX, integer=True, zero=True),
                     f"SDK limit: {what}", "sdk", shown=None if default is not None else "no limit")


def _queue(prefix: str, signal: str) -> tuple[Parameter, ...]:
    # The exporter has no batch processor (it reads the audit, which is its spool): these are the SDK's,
    # checked so that an SDK a user builds beside us never fails on them.
    ours = f"the SDK's {signal} batch processor (not used by the exporter, whose spool is the audit)"
    lower = prefix.lower()
    return (
        Parameter(f"{lower}_schedule_delay_ms", (f"OTEL_{prefix}_SCHEDULE_DELAY",), 1000,
                  Number(10, DAY_MS, "ms", integer=True), f"SDK: batch interval of {ours}", "sdk"),
        Parameter(f"{lower}_max_queue_size", (f"OTEL_{prefix}_MAX_QUEUE_SIZE",), 16_384,
                  Number(1, 1_000_000, integer=True), f"SDK: queue bound of {ours}", "sdk"),
        Parameter(f"{lower}_max_export_batch_size", (f"OTEL_{prefix}_MAX_EXPORT_BATCH_SIZE",), 512,
                  Number(1, 1_000_000, integer=True), f"SDK: batch size of {ours}", "sdk"),
        Parameter(f"otel_{lower}_export_timeout", (f"OTEL_{prefix}_EXPORT_TIMEOUT",), 30_000,
                  Number(100, DAY_MS, "ms", integer=True),
                  f"SDK: export timeout of the {signal} batch processor", "sdk"),
    )


def _otlp(name: str, suffix: str, default: Any, parse: Callable[[Any], Any], doc: str,
          **more: Any) -> Parameter:
    variables = (f"OTEL_EXPORTER_OTLP_{{SIGNAL}}_{suffix}", f"OTEL_EXPORTER_OTLP_{suffix}")
    return Parameter(name, variables, default, parse, doc, "exporter", with_otlp=True, **more)


_SECONDS = Number(0.05, DAY_S, "s")
_RANK = Number(0, LIMIT_MAX, integer=True, zero=True, clamp=False)
_SIZE = Number(1, LIMIT_MAX, integer=True, clamp=False)
_TRUE_FALSE = Choice(("true", "false"))
_CREDENTIALS = EntryPoints("opentelemetry_otlp_credential_provider")
SAMPLERS: Final = ("always_on", "always_off", "traceidratio", "parentbased_always_on",
                   "parentbased_always_off", "parentbased_traceidratio")

PARAMETERS: Final[tuple[Parameter, ...]] = (
    Parameter("runs_dir", ("LEZEA_RUNS_DIR",), "runs", path, "where `<experiment_id>/` is written",
              argument=True, convert=Path),
    Parameter("service_name", ("LEZEA_SERVICE_NAME", "OTEL_SERVICE_NAME"), names.DEFAULT_SERVICE_NAME, text,
              "`service.name` of every signal", argument=True),
    Parameter("endpoint", ("LEZEA_OTLP_ENDPOINT",), None, url,
              "collector base URL for all three signals; with no endpoint variable set: **local mode**, "
              "nothing connects anywhere", argument=True),
    Parameter("otel_endpoint", ("OTEL_EXPORTER_OTLP_ENDPOINT",), None, url,
              "the standard OTLP base URL (HTTP appends `/v1/<signal>`)", "exporter"),
    Parameter("signal_endpoint", ("OTEL_EXPORTER_OTLP_{SIGNAL}_ENDPOINT",), None, url,
              "one signal's full OTLP URL; wins over the base URL", "exporter"),
    Parameter("exporter", ("OTEL_{SIGNAL}_EXPORTER",), "otlp", Choice(("otlp", "none")),
              "`none` turns that signal's OTLP export off"),
    Parameter("protocol", ("LEZEA_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"), "http/protobuf",
              Choice(("grpc", "http/protobuf"), (("http", "http/protobuf"),)), "OTLP transport",
              argument=True),
    Parameter("signal_protocol", ("OTEL_EXPORTER_OTLP_{SIGNAL}_PROTOCOL",), None,
              Choice(("grpc", "http/protobuf"), (("http", "http/protobuf"),)),
              "one signal's OTLP transport; wins over `OTEL_EXPORTER_OTLP_PROTOCOL`", with_otlp=True,
              shown="—"),
    _otlp("timeout", "TIMEOUT", 10_000.0, Number(100, DAY_MS, "ms"),
          "per export, in **milliseconds** as the OTel specification says (the Python SDK alone: seconds)",
          convert=_ms_to_s, convert_back=_s_to_ms),
    _otlp("headers", "HEADERS", {}, headers,
          "`key=value` pairs, comma-separated, values URL-encoded (never echoed)", shown="—"),
    _otlp("compression", "COMPRESSION", "none", Choice(("gzip", "deflate", "none")), "OTLP compression"),
    _otlp("insecure", "INSECURE", None, _TRUE_FALSE, "gRPC without TLS", shown="from the URL scheme"),
    _otlp("certificate", "CERTIFICATE", None, existing_file, "CA file to verify the collector"),
    _otlp("client_key", "CLIENT_KEY", None, existing_file, "client key file (mTLS)"),
    _otlp("client_certificate", "CLIENT_CERTIFICATE", None, existing_file, "client certificate file (mTLS)"),
    Parameter("http_credential_provider",
              ("OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER",
               "OTEL_PYTHON_EXPORTER_OTLP_HTTP_{SIGNAL}_CREDENTIAL_PROVIDER"), None, _CREDENTIALS,
              "an installed credential provider (HTTP)", "exporter", with_otlp=True),
    Parameter("grpc_credential_provider",
              ("OTEL_PYTHON_EXPORTER_OTLP_GRPC_{SIGNAL}_CREDENTIAL_PROVIDER",
               "OTEL_PYTHON_EXPORTER_OTLP_GRPC_CREDENTIAL_PROVIDER"), None, _CREDENTIALS,
              "an installed credential provider (gRPC)", "exporter", with_otlp=True),
    Parameter("grpc_retryable_codes", ("OTEL_PYTHON_EXPORTER_OTLP_GRPC_RETRYABLE_ERROR_CODES",), None,
              status_codes, "gRPC status codes the exporter retries", "exporter", with_otlp=True,
              shown="the exporter's"),
    Parameter("sdk_disabled", ("OTEL_SDK_DISABLED",), False, flag, "`true`: audit only, no signals"),
    Parameter("exporter_mode", ("LEZEA_EXPORTER",), "process", Choice(EXPORTER_MODES),
              "where the OpenTelemetry work runs: `process` (an exporter process beside the trainer), "
              "`thread` (an exporter thread in the trainer, for environments that forbid subprocesses), "
              "`none` (audit only; `lezea-otel export` later)"),
    Parameter("otel_context", ("LEZEA_OTEL_CONTEXT",), "auto", Choice(OTEL_CONTEXT_MODES),
              "whether scopes and phases become the current OpenTelemetry context (the user's own spans "
              "nest under them): `auto` while an OTel SDK is loaded in the process (whoever records "
              "spans or logs), `always`, `never`"),
    Parameter("metric_export_interval_ms", ("LEZEA_METRIC_EXPORT_INTERVAL_MS", "OTEL_METRIC_EXPORT_INTERVAL"),
              15_000.0, Number(50, DAY_MS, "ms"), "metric export interval (files and OTLP)"),
    Parameter("shutdown_timeout_s", ("LEZEA_SHUTDOWN_TIMEOUT",), 5.0, Number(0.01, DAY_S, "s"),
              "bound on the flush at finalize"),
    Parameter("finish_window_s", ("LEZEA_FINISH_WINDOW",), 120.0, Number(0, DAY_S, "s", zero=True),
              "after finalize's bound the exporter process goes on in the background: the run's files to the "
              "end, a collector retried for up to this long; `0`: it stops with finalize"),
    Parameter("prometheus_port", ("LEZEA_PROMETHEUS_PORT",), None, port,
              "used when `start()` is called with its default port; `0`: none"),
    Parameter("prometheus_addr", ("LEZEA_PROMETHEUS_ADDR",), "127.0.0.1", text,
              "address `/metrics` binds to"),
    Parameter("strict", ("LEZEA_STRICT",), False, flag, "configuration problems raise at `start()`"),
    Parameter("quiet", ("LEZEA_QUIET",), False, flag, "no console line at start and finalize", argument=True),
    Parameter("audit_fsync", ("LEZEA_AUDIT_FSYNC",), "interval", Choice(AUDIT_FSYNC_POLICIES),
              "`interval` (fsync at most once a second), `always` (every record), `finalize`"),
    Parameter("cost_limit_eur", ("LEZEA_COST_LIMIT_EUR",), None, Number(0, 1e12, "EUR"),
              "recommendation when the run's cost exceeds it", argument=True),
    Parameter("max_metric_names", ("LEZEA_MAX_METRIC_NAMES",), 256, Number(1, 100_000, integer=True),
              "distinct training keys before the overflow series"),
    Parameter("checkpoint_hash_max_bytes", ("LEZEA_CHECKPOINT_HASH_MAX_MB",), 64.0, Number(0, 2**20, "MB"),
              "checkpoints up to this size get a sha256", convert=_mb_to_bytes,
              convert_back=_bytes_to_mb),
    Parameter("env_allowlist", ("LEZEA_ENV_ALLOWLIST",), (), variable_names,
              "comma-separated extra environment variables to record"),
    Parameter("observers", ("LEZEA_OBSERVERS",), True, flag, "GPU/process/host observers"),
    Parameter("observe_interval_s", ("LEZEA_OBSERVE_INTERVAL",), 10.0, Number(0.1, DAY_S, "s"),
              "observer sampling interval"),
    Parameter("gpus", ("LEZEA_GPUS",), "job", gpus,
              "`job` (CUDA_VISIBLE_DEVICES), `all`, or comma-separated GPU/MIG UUIDs"),
    Parameter("progress_after_s", ("LEZEA_PROGRESS_AFTER",), 60.0, _SECONDS,
              "scopes open longer than this get `lezea.progress` marker spans"),
    Parameter("progress_every_s", ("LEZEA_PROGRESS_EVERY",), 60.0, _SECONDS, "cadence of those markers"),
    Parameter("scope_resources", ("LEZEA_SCOPE_RESOURCES",),
              frozenset({"builder", "tasker", "algorithm", "network", "phase"}), levels,
              "scope levels that get resource summaries (`all`, `none`; `layer` is off: layers are many)",
              shown="builder,tasker,algorithm,network,phase"),
    Parameter("phase_memory", ("LEZEA_PHASE_MEMORY",), True, flag,
              "each scope's and phase's peak RSS of the training process from the kernel's high-water mark, "
              "read and reset by the exporter every 20 ms (Linux; the process's own `ru_maxrss` then reads "
              "the peak of the last 20 ms)"),
    Parameter("gpu_timing", ("LEZEA_GPU_TIMING",), "phases", Choice(GPU_TIMING_MODES),
              "once torch has initialised CUDA: CUDA events time each phase on the GPU (`phases`), "
              "scopes too (`scopes`), or nothing (`off`); resolved off the training thread"),
    Parameter("gpu_sync", ("LEZEA_GPU_SYNC",), False, flag,
              "every phase waits for its GPU work at exit (exact wall times, at a cost); one phase: "
              "`tracker.span(name, sync=True)`"),
    Parameter("nvtx", ("LEZEA_NVTX",), False, flag,
              "NVTX ranges named like the spans for scopes and phases (`torch.cuda.nvtx`, for Nsight "
              "Systems)"),
    # The launch (torchrun, SLURM, Open MPI, PMI/PMIx): who this process is among the ranks of one run.
    Parameter("experiment_id", ("LEZEA_EXPERIMENT_ID",), None, identifier,
              "the experiment id every rank and process of one run shares (else derived from the launch)"),
    Parameter("rank", ("LEZEA_RANK", "RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"),
              None, _RANK, "`dl.rank` (below the world size); rank 0 owns the experiment's root span"),
    Parameter("local_rank", ("LEZEA_LOCAL_RANK", "LOCAL_RANK", "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK",
                             "MPI_LOCALRANKID"), None, _RANK,
              "`dl.local_rank`; `/metrics` is served on the Prometheus port plus it"),
    Parameter("world_size", ("LEZEA_WORLD_SIZE", "WORLD_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE",
                             "PMI_SIZE"), None, _SIZE, "`dl.world_size`"),
    Parameter("local_world_size", ("LOCAL_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"), None,
              _SIZE,
              "`dl.local_world_size`: ranks per node (the stride between a node's `/metrics` ports)"),
    Parameter("node_rank", ("GROUP_RANK", "SLURM_NODEID"), None, _RANK, "`dl.node_rank`"),
    Parameter("role_rank", ("ROLE_RANK",), None, _RANK, "`dl.role_rank` (torchelastic roles)"),
    Parameter("launch_id", ("TORCHELASTIC_RUN_ID", "PMIX_NAMESPACE", "OMPI_MCA_ess_base_jobid"), None, text,
              "the launcher's run id, from which every rank derives the same experiment id"),
    Parameter("slurm_job", ("SLURM_JOB_ID", "SLURM_JOBID"), None, text,
              "SLURM job id (with `SLURM_STEP_ID`: one experiment per job step)"),
    Parameter("slurm_step", ("SLURM_STEP_ID", "SLURM_STEPID"), None, text, "SLURM job step id"),
    Parameter("slurm_array", ("SLURM_ARRAY_JOB_ID",), None, text, "SLURM array job id (recorded)"),
    Parameter("slurm_array_task", ("SLURM_ARRAY_TASK_ID",), None, text, "SLURM array task (recorded)"),
    Parameter("restart_attempt", ("TORCHELASTIC_RESTART_COUNT", "SLURM_RESTART_COUNT"), 0, _RANK,
              "`dl.restart_attempt`: a restarted worker group goes on with the experiment, in new folders"),
    Parameter("span_ranks", ("LEZEA_SPAN_RANKS",), "all", span_ranks,
              "ranks whose scope and phase spans are exported: `all`, `rank0`, `node` (each node's first), "
              "or a share such as `0.1` (rank 0 always); metrics and run records come from every rank, "
              "the audit keeps everything"),
    Parameter("parent_run", ("LEZEA_PARENT_RUN",), None, text,
              "set by `tracker.child_env()`: the parent's folder in the experiment's; a child process's run "
              "goes into its `children/<pid>/`"),
    Parameter("traceparent", ("TRACEPARENT",), None, traceparent,
              "W3C trace context handed down by a launcher, CI job or `tracker.child_env()`: the experiment "
              "becomes a child of that span (`00-<trace id>-<span id>-<flags>`)"),
    *_queue("BSP", "span"),
    *_queue("BLRP", "log"),
    Parameter("otel_metric_export_timeout", ("OTEL_METRIC_EXPORT_TIMEOUT",), 30_000.0,
              Number(100, DAY_MS, "ms"), "SDK: metric export timeout", "sdk"),
    Parameter("otel_metrics_exemplar_filter", ("OTEL_METRICS_EXEMPLAR_FILTER",), "trace_based",
              Choice(("trace_based", "always_on", "always_off")), "SDK: which measurements keep exemplars",
              "sdk"),
    Parameter("otel_exporter_otlp_metrics_temporality_preference",
              ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",), "cumulative",
              Choice(("cumulative", "delta", "lowmemory")), "SDK: metric temporality of the exporters",
              "sdk"),
    Parameter("otel_exporter_otlp_metrics_default_histogram_aggregation",
              ("OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",), "explicit_bucket_histogram",
              Choice(("explicit_bucket_histogram", "base2_exponential_bucket_histogram")),
              "SDK: histogram aggregation of the exporters", "sdk"),
    Parameter("otel_traces_sampler", ("OTEL_TRACES_SAMPLER",), "parentbased_always_on", Choice(SAMPLERS),
              "SDK: sampler of the tracker's spans", "sdk"),
    Parameter("otel_traces_sampler_arg", ("OTEL_TRACES_SAMPLER_ARG",), 1.0, Number(0, 1, zero=True),
              "SDK: ratio of the `traceidratio` samplers", "sdk"),
    _limit("OTEL_ATTRIBUTE_COUNT_LIMIT", 128, "attributes per span, event, link and log record"),
    _limit("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", None, "attribute value length"),
    _limit("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", 128, "attributes per span"),
    _limit("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", None, "span attribute value length"),
    _limit("OTEL_SPAN_EVENT_COUNT_LIMIT", 128, "events per span"),
    _limit("OTEL_SPAN_LINK_COUNT_LIMIT", 128, "links per span"),
    _limit("OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", 128, "attributes per span event"),
    _limit("OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", 128, "attributes per span link"),
    _limit("OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT", 128, "attributes per log record"),
    _limit("OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT", None, "log record attribute value length"),
    Parameter("otel_resource_attributes", ("OTEL_RESOURCE_ATTRIBUTES",), None, resource_attributes,
              "SDK: extra resource attributes, `key=value` pairs (ours win where both speak)", "sdk"),
    Parameter("otel_experimental_resource_detectors", ("OTEL_EXPERIMENTAL_RESOURCE_DETECTORS",), None,
              EntryPoints("opentelemetry_resource_detector", many=True, extra=("*",)),
              "SDK: extra resource detectors (installed entry points)", "sdk"),
    Parameter("otel_python_context", ("OTEL_PYTHON_CONTEXT",), None, EntryPoints("opentelemetry_context"),
              "SDK: runtime context implementation (read when the API is imported)", "sdk",
              shown="contextvars_context"),
    Parameter("otel_python_meter_provider", ("OTEL_PYTHON_METER_PROVIDER",), None,
              EntryPoints("opentelemetry_meter_provider"), "SDK: the global meter provider's entry point",
              "sdk", unset=None),
    Parameter("otel_python_sdk_internal_metrics_enabled", ("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED",),
              "false", _TRUE_FALSE, "SDK: its own processor metrics", "sdk"),
)

BY_NAME: Final = {parameter.name: parameter for parameter in PARAMETERS}


def variables() -> tuple[str, ...]:
    """Every variable the package (or the SDK, because we build its objects) reads, in table order."""
    return tuple(dict.fromkeys(v for parameter in PARAMETERS for v in parameter.variables_for()))


def _shown(parameter: Parameter) -> str:
    if parameter.shown is not None:
        return parameter.shown if parameter.shown == "—" else f"`{parameter.shown}`"
    value = parameter.default
    if value is None or value == () or value == {}:
        return "—"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    unit = getattr(parameter.parse, "unit", "")
    return f"`{value}`" + (f" ({unit})" if unit else "")


def _bounds(parameter: Parameter) -> str:
    parse = parameter.parse
    if isinstance(parse, Number):
        return f" ({parse.bounds}{', clamped' if parse.clamp else ''})"
    return ""


def _variables_cell(parameter: Parameter) -> str:
    shown = [f"`{v.replace('{SIGNAL}', '{TRACES,METRICS,LOGS}')}`" for v in parameter.variables]
    if parameter.argument:
        shown.insert(0, f"argument `{parameter.name}`")
    return ", ".join(shown)


def markdown_table() -> str:
    """README's configuration table, one row per parameter, precedence left to right."""
    rows = ["| variables (precedence left to right) | default | meaning |", "|---|---|---|"]
    for parameter in PARAMETERS:
        meaning = parameter.doc + _bounds(parameter)
        rows.append(f"| {_variables_cell(parameter)} | {_shown(parameter)} | {meaning} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
