"""Static checks of the observability stack: collector/ (collector, backends, compose) and grafana/.

Every check is a function returning the problems it found; each is run on the shipped files (no problem
expected) and on a copy with one deliberate mistake (the problem must be found), so no check passes vacuously.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COLLECTOR = ROOT / "collector"
GRAFANA = ROOT / "grafana"
DASHBOARDS = DASHBOARDS_DIR = GRAFANA / "dashboards"
COLLECTOR_CONFIGS = ("otelcol-config.yaml", "otelcol-agent.yaml", "otelcol-gateway.yaml")
EXPECTED_IMAGES = {
    "otel-collector": "otel/opentelemetry-collector-contrib:0.161.0",
    "prometheus": "prom/prometheus:v3.14.0",
    "loki": "grafana/loki:3.7.6",
    "tempo": "grafana/tempo:3.0.3",
    "grafana": "grafana/grafana:13.1.3",
}
# Component types renamed in otelcol 0.144 / contrib (stack.md pitfall 10) and the batch processor
# (pitfall 11).
OLD_COMPONENT_TYPES = {"otlphttp", "resourcedetection", "loadbalancing", "spanmetrics", "batch", "loki"}
GRAFANA_BUILTIN_VARIABLES = {"__range", "__rate_interval", "__interval", "__auto", "__all", "__range_s",
                             "__interval_ms", "__value", "__url_time_range", "__from", "__to", "__data"}


def compose_default(value: str) -> str:
    """The default of a ``${env:VAR:-default}`` setting: the value compose runs with."""
    match = re.fullmatch(r"\$\{env:\w+:-(.+)\}", value)
    assert match, value
    return match.group(1)


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


def yaml_files() -> list[Path]:
    return sorted([*COLLECTOR.glob("*.yaml"), *(GRAFANA / "provisioning").rglob("*.yaml")])


def dashboards() -> dict[str, dict]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def compose() -> dict:
    return load_yaml(COLLECTOR / "compose.yaml")


def datasources() -> dict:
    return load_yaml(GRAFANA / "provisioning" / "datasources" / "datasources.yaml")


def provisioned_uids(config: dict) -> set[str]:
    return {ds["uid"] for ds in config["datasources"]}


def all_panels(panels: list[dict]):
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


# ----------------------------------------------------------------------------------------- checks
def image_problems(config: dict) -> list[str]:
    problems = []
    for name, service in config["services"].items():
        image = service.get("image", "")
        match = re.fullmatch(r"[\w./-]+:([\w.-]+)", image)
        if (not match or match.group(1) in ("latest", "main", "stable")
                or not re.search(r"\d", match.group(1))):
            problems.append(f"{name}: image {image!r} is not pinned to an exact version tag")
        if name in EXPECTED_IMAGES and image != EXPECTED_IMAGES[name]:
            problems.append(f"{name}: {image!r} != {EXPECTED_IMAGES[name]!r}")
    missing = set(EXPECTED_IMAGES) - set(config["services"])
    return problems + [f"service {name} missing" for name in sorted(missing)]


def port_problems(config: dict) -> list[str]:
    problems = []
    for name, service in config["services"].items():
        for port in service.get("ports", []):
            if isinstance(port, dict):
                if port.get("host_ip") != "127.0.0.1":
                    problems.append(f"{name}: {port} not bound to 127.0.0.1")
            elif not str(port).startswith("127.0.0.1:") or str(port).count(":") != 2:
                problems.append(f"{name}: port {port!r} is not published as 127.0.0.1:HOST:CONTAINER")
        if service.get("network_mode") == "host":
            problems.append(f"{name}: network_mode host publishes every port")
    return problems


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: str(value) for key, value in env.items()}


def grafana_auth_problems(config: dict) -> list[str]:
    env = environment(config["services"]["grafana"])
    problems = []
    if env.get("GF_AUTH_ANONYMOUS_ENABLED", "").lower() != "false":
        problems.append("GF_AUTH_ANONYMOUS_ENABLED must be 'false'")
    password = env.get("GF_SECURITY_ADMIN_PASSWORD", "")
    if not re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]*\}", password):
        problems.append(f"admin password {password!r} is not the required ${{GRAFANA_ADMIN_PASSWORD:?...}}")
    for key, value in env.items():
        if ("PASSWORD" in key or "SECRET" in key) and not value.startswith("${"):
            problems.append(f"{key} is hard-coded")
        if re.search(r"\$\{[A-Z_]*(PASSWORD|SECRET)[A-Z_]*:-", value):
            problems.append(f"{key} falls back to a default secret")
    return problems


def mount_problems(config: dict) -> list[str]:
    problems = []
    grafana = config["services"]["grafana"].get("volumes", [])
    for source in ("../grafana/provisioning", "../grafana/dashboards"):
        mounts = [v for v in grafana if isinstance(v, str) and v.split(":")[0] == source]
        if len(mounts) != 1 or not mounts[0].endswith(":ro"):
            problems.append(f"grafana must mount {source} read-only, got {mounts}")
    for name, service in config["services"].items():
        for volume in service.get("volumes", []):
            if isinstance(volume, str) and volume.startswith((".", "/")) and volume.split(":")[0].endswith(
                    (".yaml", ".yml")) and not volume.endswith(":ro"):
                problems.append(f"{name}: config file {volume} is not mounted read-only")
    return problems


def collector_problems(config: dict) -> list[str]:
    problems = []
    service = config["service"]
    for kind in ("extensions",):
        for name in service.get(kind, []):
            if name not in (config.get(kind) or {}):
                problems.append(f"service.{kind}: {name} is not defined")
    for pipeline_name, pipeline in service["pipelines"].items():
        processors = pipeline.get("processors", [])
        if not processors or processors[0] != "memory_limiter":
            problems.append(f"{pipeline_name}: memory_limiter must be the first processor, got {processors}")
        for kind in ("receivers", "processors", "exporters"):
            for name in pipeline.get(kind, []):
                if name not in (config.get(kind) or {}):
                    problems.append(f"{pipeline_name}: {kind[:-1]} {name} is not defined")
                if name.split("/")[0] in OLD_COMPONENT_TYPES:
                    problems.append(f"{pipeline_name}: {name} uses an old or deprecated component type")
        if not pipeline.get("exporters"):
            problems.append(f"{pipeline_name}: no exporter")
    metric_exporters = set(service["pipelines"].get("metrics", {}).get("exporters", []))
    for name, exporter in (config.get("exporters") or {}).items():
        if name.split("/")[0] in ("otlp_http", "otlp_grpc", "load_balancing"):
            queue = (exporter or {}).get("sending_queue") or {}
            if queue.get("storage") not in (config.get("extensions") or {}) or \
                    queue.get("storage") not in service.get("extensions", []):
                problems.append(f"{name}: sending_queue.storage must name an enabled file_storage extension")
            # Prometheus rolls back a whole request for one refused sample: never merge metric requests.
            if ("batch" in queue) == (name in metric_exporters):
                problems.append(f"{name}: sending_queue.batch must be set, but for metrics (Prometheus)")
            if not ((exporter or {}).get("retry_on_failure") or {}).get("enabled"):
                problems.append(f"{name}: retry_on_failure not enabled")
    if "health_check" not in service.get("extensions", []):
        problems.append("health_check extension not enabled")
    return problems


def dashboard_problems(boards: dict[str, dict], uids: set[str]) -> list[str]:
    problems = []
    seen: dict[str, str] = {}
    for file, board in boards.items():
        if board.get("uid") in seen:
            problems.append(f"{file}: uid {board.get('uid')!r} also used by {seen[board['uid']]}")
        seen[board.get("uid")] = file
        if not isinstance(board.get("schemaVersion"), int) or board["schemaVersion"] < 39:
            problems.append(f"{file}: schemaVersion {board.get('schemaVersion')} < 39")
        variables = {v["name"] for v in board.get("templating", {}).get("list", [])}
        panel_ids = [p.get("id") for p in all_panels(board["panels"])]
        if len(panel_ids) != len(set(panel_ids)) or None in panel_ids:
            problems.append(f"{file}: panel ids missing or duplicated")
        things = [(f"panel {p.get('title')!r}", p) for p in all_panels(board["panels"])]
        things += [(f"panel {p.get('title')!r} target {t.get('refId')}", t)
                   for p in all_panels(board["panels"]) for t in p.get("targets", [])]
        things += [(f"variable {v['name']}", v) for v in board.get("templating", {}).get("list", [])
                   if v.get("type") == "query"]
        for where, thing in things:
            datasource = thing.get("datasource")
            if thing.get("type") == "row" and datasource is None:
                continue
            if thing.get("targets") == [] or ("targets" not in thing and "expr" not in thing
                                               and "query" not in thing and thing.get("type") != "query"):
                if thing.get("type") not in ("row", "text"):
                    problems.append(f"{file}: {where} has no queries")
                continue
            if not isinstance(datasource, dict) or datasource.get("uid") not in uids:
                problems.append(f"{file}: {where} datasource {datasource} is not a provisioned uid "
                                f"{sorted(uids)}")
        text = json.dumps(board)
        for used in set(re.findall(r"\$\{?(\w+)", text)):
            if used not in variables and used not in GRAFANA_BUILTIN_VARIABLES:
                problems.append(f"{file}: variable ${used} is used but not defined")
    return problems


# ----------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_yaml_parses(path):
    assert isinstance(load_yaml(path), dict)


def test_all_expected_files_exist():
    expected = [*(COLLECTOR / name for name in COLLECTOR_CONFIGS),
                *(COLLECTOR / f"{n}.yaml" for n in ("prometheus", "tempo", "loki", "compose")),
                *(DASHBOARDS / f"{n}.json" for n in ("training", "resources", "slow-phases", "logs")),
                GRAFANA / "provisioning" / "dashboards" / "dashboards.yaml",
                GRAFANA / "provisioning" / "datasources" / "datasources.yaml",
                ROOT / "docs" / "stack.md"]
    assert [p for p in expected if not p.is_file()] == []


class TestCompose:
    def test_images_pinned(self):
        assert image_problems(compose()) == []
        broken = copy.deepcopy(compose())
        broken["services"]["grafana"]["image"] = "grafana/grafana:latest"
        broken["services"]["loki"]["image"] = "grafana/loki"
        assert len(image_problems(broken)) >= 3

    def test_ports_on_loopback_only(self):
        config = compose()
        assert port_problems(config) == []
        assert all(service.get("ports") for name, service in config["services"].items()
                   if name in ("otel-collector", "grafana"))
        broken = copy.deepcopy(config)
        broken["services"]["otel-collector"]["ports"].append("4317:4317")
        broken["services"]["grafana"]["ports"].append("0.0.0.0:3000:3000")
        broken["services"]["loki"]["ports"].append({"target": 3100, "published": 3100})
        assert len(port_problems(broken)) == 3

    def test_grafana_requires_a_password_and_no_anonymous_access(self):
        assert grafana_auth_problems(compose()) == []
        for key, value in (("GF_AUTH_ANONYMOUS_ENABLED", "true"),
                           ("GF_SECURITY_ADMIN_PASSWORD", "admin"),
                           ("GF_SECURITY_ADMIN_PASSWORD", "${GRAFANA_ADMIN_PASSWORD:-admin}")):
            broken = copy.deepcopy(compose())
            broken["services"]["grafana"]["environment"][key] = value
            assert grafana_auth_problems(broken), (key, value)

    def test_read_only_mounts(self):
        assert mount_problems(compose()) == []
        broken = copy.deepcopy(compose())
        volumes = broken["services"]["grafana"]["volumes"]
        volumes[:] = [v.removesuffix(":ro") if "dashboards" in v else v for v in volumes]
        assert mount_problems(broken)

    def test_mounts_match_the_configs(self):
        """The queue volume sits where file_storage writes; Grafana's dashboard mount is the provider path."""
        config = compose()
        extensions = load_yaml(COLLECTOR / "otelcol-config.yaml")["extensions"]
        directory = compose_default(extensions["file_storage/queue"]["directory"])
        collector_volumes = config["services"]["otel-collector"]["volumes"]
        assert any(v.split(":")[1] == directory and not v.startswith((".", "/")) for v in collector_volumes)
        assert any(v.startswith("./otelcol-config.yaml:") for v in collector_volumes)
        provider = load_yaml(GRAFANA / "provisioning" / "dashboards" / "dashboards.yaml")["providers"][0]
        mounts = {v.split(":")[0]: v.split(":")[1] for v in config["services"]["grafana"]["volumes"]}
        assert mounts["../grafana/dashboards"] == provider["options"]["path"]
        assert mounts["../grafana/provisioning"] == "/etc/grafana/provisioning"
        assert provider["folder"] == "lezea" and provider["type"] == "file"
        for name in ("prometheus", "tempo", "loki"):
            (config_mount,) = [v for v in config["services"][name]["volumes"]
                               if v.startswith(f"./{name}.yaml:")]
            target = config_mount.split(":")[1]
            assert any(target in arg for arg in config["services"][name]["command"])

    def test_prometheus_flags(self):
        command = compose()["services"]["prometheus"]["command"]
        for flag in ("--web.enable-otlp-receiver", "--web.enable-remote-write-receiver",
                     "--enable-feature=exemplar-storage"):
            assert flag in command


class TestCollector:
    @pytest.mark.parametrize("name", COLLECTOR_CONFIGS)
    def test_pipelines(self, name):
        config = load_yaml(COLLECTOR / name)
        assert collector_problems(config) == []
        assert set(config["service"]["pipelines"]) == {"metrics", "traces", "logs"}

    def test_checks_catch_mistakes(self):
        config = load_yaml(COLLECTOR / "otelcol-config.yaml")
        for mutate in (
            lambda c: c["service"]["pipelines"]["logs"]["processors"].insert(0, "transform"),
            lambda c: c["exporters"]["otlp_http/prometheus"]["sending_queue"].update(batch={}),
            lambda c: c["service"]["pipelines"]["traces"]["exporters"].append("otlp_grpc/jaeger"),
            lambda c: c["service"]["pipelines"]["metrics"]["processors"].insert(1, "batch"),
            lambda c: c["exporters"]["otlp_http/loki"]["sending_queue"].pop("storage"),
            lambda c: c["exporters"]["otlp_grpc/tempo"].pop("retry_on_failure"),
            lambda c: c["service"]["extensions"].remove("file_storage/queue"),
        ):
            broken = copy.deepcopy(config)
            mutate(broken)
            assert collector_problems(broken)

    def test_single_box_endpoints(self):
        """Every address is ${env:VAR:-compose default}: a host install or a test sets variables."""
        config = load_yaml(COLLECTOR / "otelcol-config.yaml")
        protocols = config["receivers"]["otlp"]["protocols"]
        assert protocols["grpc"]["endpoint"] == "${env:OTELCOL_OTLP_GRPC_LISTEN:-0.0.0.0:4317}"
        assert protocols["http"]["endpoint"] == "${env:OTELCOL_OTLP_HTTP_LISTEN:-0.0.0.0:4318}"
        exporters = config["exporters"]
        assert exporters["otlp_http/prometheus"]["endpoint"] == \
            "${env:PROMETHEUS_OTLP_ENDPOINT:-http://prometheus:9090/api/v1/otlp}"
        assert exporters["otlp_grpc/tempo"]["endpoint"] == "${env:TEMPO_OTLP_ENDPOINT:-tempo:4317}"
        assert exporters["otlp_http/loki"]["endpoint"] == "${env:LOKI_OTLP_ENDPOINT:-http://loki:3100/otlp}"
        pipelines = config["service"]["pipelines"]
        assert pipelines["metrics"]["exporters"] == ["otlp_http/prometheus"]
        assert pipelines["traces"]["exporters"] == ["otlp_grpc/tempo"]
        assert pipelines["logs"]["exporters"] == ["otlp_http/loki"]
        limiter = config["processors"]["memory_limiter"]
        assert "limit_percentage" not in limiter and "limit_mib" in limiter  # a host's RAM is the trainer's

    def test_agent_and_gateway(self):
        agent = load_yaml(COLLECTOR / "otelcol-agent.yaml")
        gateway = load_yaml(COLLECTOR / "otelcol-gateway.yaml")
        for protocol in agent["receivers"]["otlp"]["protocols"].values():
            assert re.fullmatch(r"\$\{env:\w+:-127\.0\.0\.1:\d+\}", protocol["endpoint"])
        pipelines = agent["service"]["pipelines"]
        assert pipelines["traces"]["exporters"] == ["load_balancing/by_trace"]
        assert pipelines["logs"]["exporters"] == ["load_balancing/by_trace"]
        assert pipelines["metrics"]["exporters"] == ["load_balancing/by_resource"]
        assert agent["exporters"]["load_balancing/by_trace"]["routing_key"] == "traceID"
        exported = {e for p in gateway["service"]["pipelines"].values() for e in p["exporters"]}
        assert exported == {"otlp_http/prometheus", "otlp_grpc/tempo", "otlp_http/loki"}


class TestBackends:
    def test_prometheus(self):
        config = load_yaml(COLLECTOR / "prometheus.yaml")
        otlp = config["otlp"]
        # The labels a pushed series gets are the ones a scraped series has (tests/test_stack_e2e.py).
        assert set(otlp["promote_resource_attributes"]) == {"lezea.experiment.id", "lezea.experiment.name",
                                                           "dl.rank"}
        assert otlp["promote_scope_metadata"] is True and otlp["keep_identifying_resource_attributes"] is True
        assert config["storage"]["tsdb"]["out_of_order_time_window"] == "30d"  # = retention (compose)

    def test_tempo(self):
        config = load_yaml(COLLECTOR / "tempo.yaml")
        assert "ingester" not in config  # removed in Tempo 3
        generator = config["metrics_generator"]
        dimensions = set(generator["processor"]["span_metrics"]["dimensions"])
        assert {"lezea.phase.name", "lezea.scope"} <= dimensions
        (remote,) = generator["storage"]["remote_write"]
        assert remote == {"url": "http://prometheus:9090/api/v1/write", "send_exemplars": True}
        defaults = config["overrides"]["defaults"]
        assert defaults["metrics_generator"]["processors"] == ["span-metrics"]  # INTERNAL spans: no graph
        assert defaults["compaction"]["block_retention"] == "720h"
        protocols = config["distributor"]["receivers"]["otlp"]["protocols"]
        assert protocols["grpc"]["endpoint"].endswith(":4317")

    def test_loki(self):
        config = load_yaml(COLLECTOR / "loki.yaml")
        (schema,) = config["schema_config"]["configs"]
        assert (schema["schema"], schema["store"], schema["object_store"]) == ("v13", "tsdb", "filesystem")
        limits = config["limits_config"]
        assert limits["allow_structured_metadata"] is True
        indexed = [a for c in limits["otlp_config"]["resource_attributes"]["attributes_config"]
                   if c["action"] == "index_label" for a in c["attributes"]]
        assert indexed == ["lezea.experiment.id"]
        assert limits["reject_old_samples_max_age"] == limits["retention_period"] == "720h"


class TestGrafana:
    def test_datasources(self):
        config = datasources()
        by_uid = {ds["uid"]: ds for ds in config["datasources"]}
        assert set(by_uid) == {"prometheus", "tempo", "loki"}
        assert {ds["type"] for ds in by_uid.values()} == {"prometheus", "tempo", "loki"}
        exemplars = by_uid["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
        assert {e["name"] for e in exemplars} == {"trace_id", "traceID"}  # ours, and Tempo's span metrics
        logs = by_uid["tempo"]["jsonData"]["tracesToLogsV2"]
        assert logs["customQuery"] is True and '| trace_id="$${__trace.traceId}"' in logs["query"]
        (field,) = by_uid["loki"]["jsonData"]["derivedFields"]
        assert (field["matcherType"], field["matcherRegex"], field["datasourceUid"]) == (
            "label", "trace_id", "tempo")

    def test_datasource_links_point_to_provisioned_uids(self):
        text = (GRAFANA / "provisioning" / "datasources" / "datasources.yaml").read_text()
        referenced = set(re.findall(r"datasourceUid:\s*(\S+)", text))
        assert referenced and referenced <= provisioned_uids(datasources())

    def test_dollar_signs_escaped(self):
        """Grafana expands $VAR / ${VAR} from the environment in provisioning files; $$ keeps a literal $."""
        for path in (GRAFANA / "provisioning").rglob("*.yaml"):
            text = "\n".join(line for line in path.read_text().splitlines()
                             if not line.lstrip().startswith("#"))
            assert re.findall(r"(?<!\$)\$(?!\$)", text.replace("$$", "")) == [], path

    def test_dashboards(self):
        boards = dashboards()
        assert set(boards) == {"training.json", "resources.json", "slow-phases.json", "logs.json",
                               "cost.json", "pipeline.json"}
        assert dashboard_problems(boards, provisioned_uids(datasources())) == []
        for file, board in boards.items():
            if file == "pipeline.json":  # the collector's health, not a run's: no run variables
                continue
            variables = {v["name"]: v for v in board["templating"]["list"]}
            query = variables["experiment"]["query"]
            assert re.fullmatch(r"label_values\(lezea_run_state(\{.*\})?, lezea_experiment_id\)",
                                query["query"])
            assert variables["experiment"]["datasource"]["uid"] == "prometheus"

    def test_dashboard_checks_catch_mistakes(self):
        uids = provisioned_uids(datasources())
        for mutate in (
            lambda b: b["logs.json"].update(uid=b["training.json"]["uid"]),
            lambda b: b["training.json"]["panels"][1]["targets"][0].update(datasource={"uid": "mimir"}),
            lambda b: b["resources.json"]["panels"][1].update(datasource={"type": "prometheus", "uid": "P1"}),
            lambda b: b["slow-phases.json"]["templating"]["list"][0].update(datasource={"uid": "nope"}),
            lambda b: b["training.json"]["panels"][1]["targets"][0].update(expr="up{a=\"$experimnet\"}"),
            lambda b: b["logs.json"].update(schemaVersion=16),
        ):
            broken = copy.deepcopy(dashboards())
            mutate(broken)
            assert dashboard_problems(broken, uids)

    def test_runs_table_maps_stopped_runs(self):
        board = dashboards()["training.json"]
        (table,) = [p for p in all_panels(board["panels"]) if p.get("title") == "Runs" and p["type"] != "row"]
        assert table["type"] == "table"
        assert all(t["instant"] and t["format"] == "table" for t in table["targets"])
        (status,) = [o for o in table["fieldConfig"]["overrides"] if o["matcher"]["options"] == "Status"]
        (mappings,) = [p["value"] for p in status["properties"] if p["id"] == "mappings"]
        texts = {key: option["text"] for key, option in mappings[0]["options"].items()}
        assert set(texts.values()) == {"running", "finished", "failed", "terminated", "stopped", "abandoned"}
        stopped = next(o for o in mappings[0]["options"].values() if o["text"] == "stopped")
        assert stopped["color"] == "red"
        assert "$stale_after" in table["targets"][0]["expr"] and "$__range" in table["targets"][0]["expr"]
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["stale_after"]["type"] == "custom"


class TestDashboardsFromCode:
    def test_every_committed_dashboard_is_what_its_code_makes(self, tmp_path):
        """grafana/dashboards/ is written by scripts/dashboards.py (grafana-foundation-sdk); a file edited by
        hand, or code changed without regenerating, fails here."""
        checked = subprocess.run([sys.executable, "scripts/dashboards.py", "--check"], cwd=ROOT,
                                 capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        from lezea_otel.mixin.dashboards import DASHBOARDS
        assert set(DASHBOARDS) == {path.name for path in DASHBOARDS_DIR.glob("*.json")}
        edited = tmp_path / "dashboards"
        shutil.copytree(DASHBOARDS_DIR, edited)
        (edited / "logs.json").write_text((edited / "logs.json").read_text().replace("Errors", "Mistakes"))
        checked = subprocess.run([sys.executable, "scripts/dashboards.py", "--check", "-o", str(edited)],
                                 cwd=ROOT, capture_output=True, text=True)
        assert checked.returncode == 1 and "logs.json" in checked.stdout

    def test_every_panel_says_in_one_line_what_it_shows(self):
        for file, board in dashboards().items():
            for panel in all_panels(board["panels"]):
                if panel["type"] != "row":
                    description = panel.get("description", "")
                    assert description and "\n" not in description, (file, panel["title"])
