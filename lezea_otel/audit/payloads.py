"""What each record kind's ``data`` holds: one ``TypedDict`` per :class:`~lezea_otel.audit.record.Kind`.

Declared is the ``"data"`` object of an audit line as ``reader.read_events`` gives it back (for every kind
but ``training_step`` that is ``Record.data`` too), as the writers in ``trainer/`` shape it: a key that is
not ``NotRequired`` is always written, if need be as ``None``. A non-finite float is a ``float`` here (the
audit writes it as text, ``read_events`` revives it). Audits outlive the code that wrote them, so nothing
rejects a record: :func:`payload_problems` only says how one differs from its declaration.
"""

# No ``from __future__ import annotations``: Python 3.11's TypedDict reads ``Required``/``NotRequired`` from
# evaluated annotations only (as strings every key would be counted by ``total``).

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, Literal, NotRequired, TypedDict

from lezea_otel.audit.record import Kind

AttributeValue = str | bool | int | float | list[str] | list[int | float]
"""A value as OTel takes it as an attribute (``values.attribute_value``): anything else became JSON text."""
SampleId = str | int
"""A sample id as ``values.identifier`` keeps it: a 64-bit integer, or a text of at most 64 characters."""


class ExceptionFields(TypedDict):
    """OTel's ``exception.*`` of the exception that ended a scope, phase or run (``exception_fields``)."""
    type: str
    message: str
    stacktrace: str


class SplitIds(TypedDict):
    """One split of ``log_data_splits`` (``calls.split``): up to 10,000 ids, the count and a digest of all."""
    count: int
    sha256: str
    ids: list[SampleId]
    truncated: bool


class ComponentTotals(TypedDict):
    """One component over the run, from its ``log_resource`` calls (``RunState.resource_totals``); a figure
    no call gave (or whose value was refused) is None."""
    component_type: str | None
    samples: int
    cpu_percent_mean: float | None
    cpu_percent_max: float | None
    gpu_percent_mean: float | None
    gpu_percent_max: float | None
    memory_mb_peak: float | None
    io_operations_total: float | None


class ObservedTotals(TypedDict, total=False):
    """The exporter's observer totals (``Observers.totals``), all or nothing: ``{}`` where no exporter thread
    observed (a process exporter keeps them in its own report). ``energy_joules``: ``"total"`` and per GPU;
    ``gpus``: ``hw.id``, ``name``, ``index``."""
    samples: int
    cpu_hours: float
    memory_peak_bytes: int
    processes: int
    gpu_hours: float
    energy_joules: dict[str, float]
    gpu_memory_peak_bytes: dict[str, int]
    gpus: list[dict[str, str | int]]


class GpuFacts(TypedDict):
    """A GPU as NVML names it at start (``environment.gpus``)."""
    index: int
    name: str
    uuid: str
    memory_bytes: int
    driver: str


class GitFacts(TypedDict, total=False):
    """``trainer.resource.git_facts``: ``{}`` outside a repository, ``commit`` alone where the rest failed."""
    commit: str
    branch: str | None
    dirty: bool
    remote: str


class LaunchFacts(TypedDict):
    """``config.launch.Launch.as_record``: the rank of a distributed run (``None`` where no launcher said)."""
    launcher: str | None
    rank: int | None
    local_rank: int | None
    world_size: int | None
    local_world_size: int | None
    node_rank: int | None
    job_id: str | None
    attempt: int
    array: NotRequired[str]


class ExperimentStart(TypedDict):
    """``Session.start``: the run's (or a forked worker's) identity and OTel resource attributes; its time is
    the root span's start."""
    experiment_id: str
    name: str
    purpose: str
    tags: list[str]
    service_name: str
    targets: list[str]
    run_dir: str
    pid: int
    host: str
    max_metric_names: int
    cost_limit_eur: float | None
    """``LEZEA_COST_LIMIT_EUR`` (or ``cost_limit_eur=``): the exporter's ``lezea.cost.limit`` gauge."""
    worker: bool
    launch: LaunchFacts
    rank_lane: bool
    """A rank other than 0 of a launch with a shared trace: this run's root is that rank's lane under rank
    0's ``experiment`` span."""
    child: bool
    """A process started with ``tracker.child_env()``: its root is a ``child process`` span under the span
    open in the parent then."""
    prometheus_port: int | None
    spans: bool
    """Whether this rank's scope and phase spans are exported (``LEZEA_SPAN_RANKS``); the audit has them."""
    resource: dict[str, AttributeValue]


class Environment(TypedDict):
    """``Session.start`` (not in a forked worker): ``util.environment.describe_environment`` and the git
    facts, each through allow-lists. ``python``: version, implementation, executable; ``platform``: system,
    release, machine, host; ``cpu``: logical, physical, available (``None`` where unknown)."""
    python: dict[str, str]
    platform: dict[str, str]
    cpu: dict[str, int | None]
    memory_bytes: int
    packages: dict[str, str]
    gpus: list[GpuFacts]
    argv: list[str]
    env: dict[str, str]
    cwd: str
    git: GitFacts


class Config(TypedDict, total=False):
    """``log_lezea_config`` (``calls.config``): only the arguments given and usable; a population size that
    is no whole number is kept as given (with a warning)."""
    tasker_population_size: int | float
    builder_population_size: int | float
    algorithm_type: str
    start_network_id: str
    initialization_scheme: str
    hyperparameters: dict[str, Any]
    seeds: dict[str, Any]


class ExperimentEnd(TypedDict):
    """``Session.finalize``, once: how the run ended (``ended_by``: ``finalize_experiment``, ``atexit``,
    ``sigterm``, ``worker_exit``), ``exception`` when one ended it; its time is the root span's end."""
    status: Literal["finished", "failed", "terminated", "abandoned"]
    ended_by: str
    duration_s: float
    error: str | None
    warnings: int
    exception: NotRequired[ExceptionFields]


ScopeStart = TypedDict("ScopeStart", {  # noqa: UP013 - "lezea.network.type"
    "level": Literal["builder", "tasker", "algorithm", "network", "layer"],
    "id": str,
    "lezea.network.type": NotRequired[str],
})
ScopeStart.__doc__ = """``Session.enter_block`` for a ``*_scope`` call: the level and id, and
``network_scope``'s network type under its OTel attribute name (``semconv.NETWORK_TYPE``)."""


class _Ended(TypedDict):
    """What a scope's and a phase's end record share (``Frame.end_record``): ``error`` and ``exception``
    when an exception left the block, ``truncated`` when something else ended it first (a finalize, a
    signal); ``resources`` in older audits only (the trainer once measured blocks; readers still take it)."""
    duration_s: float
    error: NotRequired[str]
    exception: NotRequired[ExceptionFields]
    truncated: NotRequired[str]
    resources: NotRequired[dict[str, Any]]
    gpu_duration_s: NotRequired[float]
    """GPU time between CUDA events recorded at enter and exit (``trainer.gpu_timing``)."""
    gpu_unresolved: NotRequired[bool]
    """The exit event had not completed when the run ended: no GPU time."""


class ScopeEnd(_Ended):
    """``Frame.end_record`` of a ``*_scope`` block."""
    level: Literal["builder", "tasker", "algorithm", "network", "layer"]
    id: str


class Phase(_Ended):
    """``Frame.end_record`` of ``tracker.span(name, **attributes)``, a phase's only record: the user's
    attributes flattened (``{"a": {"b": 1}}`` is ``{"a.b": 1}``), absent when none."""
    name: str
    attributes: NotRequired[dict[str, AttributeValue]]


class TrainingStep(TypedDict):
    """``log_training_step``, as the audit line holds it (``AuditWriter._encode``): the numbers under
    ``metrics`` with scope-prefixed keys (``builder:42/loss``), ``delta_loss`` among them from the second
    step of a series on. In memory the ``Record`` keeps them unprefixed in ``Record.values``, and its
    ``data`` holds ``data_split`` alone."""
    metrics: dict[str, float]
    data_split: NotRequired[str]


class ModificationTree(TypedDict):
    """``log_modification_tree``: the modifications made plain, and the statistics (numbers as floats, any
    other value made plain: ``calls.statistics``)."""
    modifications: list[Any]
    statistics: dict[str, Any]


class Statistics(TypedDict):
    """``log_modification_tree_stats`` and ``log_modification_stats`` (``calls.statistics``)."""
    statistics: dict[str, Any]


class DataSplits(TypedDict, total=False):
    """``log_data_splits``: one entry per split given (an omitted split is not an empty one)."""
    train: SplitIds
    val: SplitIds
    test: SplitIds


class DataUsage(TypedDict):
    """``log_data_usage``: the samples used (``calls.split`` under the audit's names)."""
    epoch: int | None
    count: int
    sha256: str
    sample_ids: list[SampleId]
    truncated: bool


class DataScore(TypedDict):
    """``log_data_score`` (``calls.data_score``): ``score`` only when both losses are numbers."""
    sample_id: SampleId
    before_loss: float | None
    after_loss: float | None
    score: NotRequired[float]


class DeltaLoss(TypedDict):
    """``log_delta_loss``: ``delta_loss = loss - prev_loss`` where both are numbers."""
    epoch: int | None
    loss: float | None
    prev_loss: float | None
    delta_loss: float | None


class Resource(TypedDict):
    """``log_resource`` and ``log_component_resources`` (``calls.resource``): a measure is present when it
    was given, ``None`` when it was not a finite number >= 0."""
    component_id: str
    component_type: str | None
    cpu_percent: NotRequired[float | None]
    gpu_percent: NotRequired[float | None]
    memory_mb: NotRequired[float | None]
    io_operations: NotRequired[float | None]


class ResourceTotals(TypedDict):
    """``Session.finalize``, only where an exporter observes the trainer (``LEZEA_EXPORTER=thread|process``
    with observers on)."""
    observed: ObservedTotals
    components: dict[str, ComponentTotals]


class Checkpoint(TypedDict):
    """``log_checkpoint`` (``calls.checkpoint``): ``sha256`` for a file up to
    ``LEZEA_CHECKPOINT_HASH_MAX_MB``; ``metadata`` made plain and scrubbed (a dict where the caller passed
    one, as the spec has it)."""
    path: str
    exists: bool
    size_bytes: int | None
    sha256: str | None
    metadata: NotRequired[Any]


class DatasetVersion(TypedDict):
    """``log_dataset_version`` (``calls.dataset``): ``exists`` only where ``path`` names something that
    exists; ``metadata`` as in :class:`Checkpoint`."""
    name: str
    version_tag: str | None
    path: str | None
    exists: NotRequired[Literal[True]]
    metadata: NotRequired[Any]


class Results(TypedDict, total=False):
    """``log_results``: each part given, ``action_outputs`` made plain."""
    result_dict: dict[str, float]
    tasker_rewards: dict[str, float]
    builder_rewards: dict[str, float]
    action_outputs: Any


class Reward(TypedDict):
    """``log_reward``: written only when ``reward`` is a number; ``role`` is ``agent_type`` (``tasker``
    unless told)."""
    agent_id: str
    role: str
    reward: float


class ResourceCost(TypedDict, total=False):
    """``log_resource_cost``: the figures given that are numbers."""
    cpu_hours: float
    gpu_hours: float
    mem_gb: float
    io_bytes: float
    cost_eur: float


class BusinessMetrics(TypedDict):
    """``log_business_metrics``: the keyword figures and ``resource_cost_eur``, flattened to numbers."""
    metrics: dict[str, float]


class Text(TypedDict):
    """``log_comment`` and ``log_conclusion``."""
    text: str


class MetricDefinition(TypedDict):
    """``define_metric``: the key (a logged key, a full summary name, or a ``*`` glob), its goal (``min``,
    ``max`` or ``None``: as its name says) and its summary figure (``metric_stats.SUMMARIES`` or ``None``)."""
    key: str
    goal: Literal["min", "max"] | None
    summary: str | None


class TorchMemory(TypedDict):
    """The CUDA caching allocator per device index (``allocated``, ``reserved``, ``peak`` bytes), read by
    the trainer at a training step once per ``LEZEA_OBSERVE_INTERVAL`` once torch has initialised CUDA: the
    exporter, another process, cannot read it."""
    devices: dict[str, dict[str, int]]


PAYLOADS: Final[Mapping[Kind, type]] = MappingProxyType({
    Kind.EXPERIMENT_START: ExperimentStart, Kind.ENVIRONMENT: Environment, Kind.CONFIG: Config,
    Kind.EXPERIMENT_END: ExperimentEnd, Kind.SCOPE_START: ScopeStart, Kind.SCOPE_END: ScopeEnd,
    Kind.PHASE: Phase, Kind.TRAINING_STEP: TrainingStep, Kind.MODIFICATION_TREE: ModificationTree,
    Kind.MODIFICATION_TREE_STATS: Statistics, Kind.MODIFICATION_STATS: Statistics,
    Kind.DATA_SPLITS: DataSplits, Kind.DATA_USAGE: DataUsage, Kind.DATA_SCORE: DataScore,
    Kind.DELTA_LOSS: DeltaLoss, Kind.RESOURCE: Resource, Kind.RESOURCE_TOTALS: ResourceTotals,
    Kind.CHECKPOINT: Checkpoint, Kind.DATASET_VERSION: DatasetVersion, Kind.RESULTS: Results,
    Kind.REWARD: Reward, Kind.RESOURCE_COST: ResourceCost, Kind.BUSINESS_METRICS: BusinessMetrics,
    Kind.COMMENT: Text, Kind.CONCLUSION: Text, Kind.METRIC_DEFINITION: MetricDefinition,
    Kind.TORCH_MEMORY: TorchMemory,
})
"""Every kind's declared ``data``."""


def payload_problems(kind: str, data: Mapping[str, Any]) -> list[str]:
    """How a record's ``data`` differs from its kind's declaration: required keys missing, keys not
    declared; empty when it fits. Only the top-level keys are checked, and nothing raises: an old audit
    still reads, this only reports."""
    try:
        declared = PAYLOADS[Kind(kind)]
    except (ValueError, TypeError):
        return [f"{kind!r} is not a record kind"]
    if not isinstance(data, Mapping):
        return [f"{kind} data is a {type(data).__name__}, not an object"]
    required: frozenset[str] = getattr(declared, "__required_keys__", frozenset())
    optional: frozenset[str] = getattr(declared, "__optional_keys__", frozenset())
    problems = [f"{kind} data lacks the required key {key!r}" for key in sorted(required - data.keys())]
    problems += [f"{kind} data holds the undeclared key {key!r}" for key in data
                 if key not in required and key not in optional]
    return problems
