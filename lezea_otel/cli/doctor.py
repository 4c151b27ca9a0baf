"""``lezea-otel doctor``: this node's settings and what they reach (endpoint, GPUs, port, runs folder)."""

from __future__ import annotations

import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from rich.table import Table

from lezea_otel.cli.common import console, say
from lezea_otel.config.settings import resolve_settings


def doctor(port: int | None) -> None:
    """See the ``doctor`` command."""
    settings = resolve_settings({})
    failures = 0
    table = Table(title="Resolved settings (README's configuration table; OTel SDK variables when set)")
    table.add_column("setting")
    table.add_column("value", overflow="fold")
    table.add_column("from")
    for row in settings.rows():
        table.add_row(*row)
    table.add_row("otlp signals", ", ".join(sorted(settings.otlp_signals)) or "none (local mode)", "")
    console.print(table)
    for problem in settings.problems:
        failures += 1
        say(console, "FAIL", "red", f" configuration: {problem}")
    failures += _check_endpoint(settings)
    _check_nvml()
    checked = port if port is not None else settings.prometheus_port or 8000  # --port 0: any free port
    failures += _check_port(checked, settings.prometheus_addr,
                            configured=port is not None or settings.prometheus_port is not None)
    failures += _check_writable(settings.runs_dir)
    if failures:
        say(console, f"{failures} problem(s) found", "red", "")
        raise SystemExit(1)
    say(console, "all checks passed", "green", "")


def _check_endpoint(settings: Any) -> int:
    if not settings.otlp_signals:
        say(console, "ok", "green", "   OTLP: local mode (no endpoint configured), nothing to reach")
        return 0
    endpoint = settings.endpoint or settings.otel_endpoint or next(iter(settings.otlp_endpoints.values()))
    url = urllib.parse.urlparse(endpoint)
    host, port = url.hostname or "localhost", url.port or (4317 if settings.protocol == "grpc" else 4318)
    try:
        with socket.create_connection((host, port), timeout=3):
            pass
    except OSError as error:
        say(console, "FAIL", "red", f" OTLP endpoint {endpoint} is not reachable: {error}")
        return 1
    if settings.protocol != "grpc":
        request = urllib.request.Request(f"{url.scheme}://{host}:{port}/v1/traces", data=b"", method="POST",
                                         headers={"Content-Type": "application/x-protobuf"})
        try:
            urllib.request.urlopen(request, timeout=5).read()
        except urllib.error.HTTPError as error:
            say(console, "FAIL", "red", f" OTLP/HTTP {endpoint} answered {error.code} to an empty export")
            return 1
        except OSError as error:
            say(console, "FAIL", "red", f" OTLP/HTTP {endpoint}: {error}")
            return 1
    say(console, "ok", "green", f"   OTLP {settings.protocol} endpoint {endpoint} answers")
    return 0


def _check_nvml() -> None:
    from lezea_otel.util.environment import gpus

    found = gpus()
    if not found:
        say(console, "info", "yellow", " NVML: no GPU, driver or nvidia-ml-py; GPU metrics will be absent")
    for gpu in found:
        say(console, "ok", "green",
             f"   GPU {gpu['index']}: {gpu['name']} {gpu['uuid']} (driver {gpu['driver']})")


def _check_port(port: int, addr: str, configured: bool) -> int:
    with socket.socket() as sock:
        try:
            sock.bind((addr, port))
        except OSError as error:
            say(console, *(("FAIL", "red") if configured else ("warn", "yellow")),
                 f" /metrics port {addr}:{port} is taken: {error}")
            return 1 if configured else 0
    say(console, "ok", "green", f"   /metrics port {addr}:{port} is free")
    return 0


def _check_writable(folder: Path) -> int:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as error:
        say(console, "FAIL", "red", f" runs folder {folder} is not writable: {error}")
        return 1
    say(console, "ok", "green", f"   runs folder {folder.resolve()} is writable")
    return 0

