"""Replay a run's OTLP-JSON lines into a collector, keeping their original timestamps.

Resumable: ``replay-state.json`` in the run folder records, per file and endpoint, how many lines
were delivered, so a second run sends nothing twice and an interrupted one picks up where it
stopped. A corrupt line is skipped, counted and named (file and line number).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from .otlp_json import GRPC_STUBS, REJECTED_FOLDER, SIGNAL_FILES, to_request

STATE_FILE = "replay-state.json"


class ReplayError(RuntimeError):
    """The endpoint could not take the data; what was sent so far is recorded."""


@dataclass
class ReplayResult:
    sent: dict[str, int] = field(default_factory=dict)
    already_sent: int = 0
    corrupt: list[str] = field(default_factory=list)


class _Sender:
    def __init__(self, endpoint: str, protocol: str, timeout_s: float,
                 headers: Mapping[str, Mapping[str, str]]) -> None:
        self._endpoint = endpoint.rstrip("/")
        self._protocol = protocol
        self._timeout = timeout_s
        self._headers = headers
        self._channel: Any = None

    def send(self, signal: str, request: Any) -> None:
        if self._protocol == "grpc":
            import grpc

            if self._channel is None:
                target = urllib.parse.urlparse(self._endpoint).netloc or self._endpoint
                self._channel = grpc.insecure_channel(target)
            try:
                metadata = [(key.lower(), value) for key, value in self._headers.get(signal, {}).items()]
                GRPC_STUBS[signal](self._channel).Export(request, timeout=self._timeout, metadata=metadata)
            except grpc.RpcError as error:
                raise ReplayError(f"{self._endpoint} refused {signal}: {error.code().name}") from None
            return
        http = urllib.request.Request(f"{self._endpoint}/v1/{signal}", data=request.SerializeToString(),
                                      headers={**self._headers.get(signal, {}),
                                               "Content-Type": "application/x-protobuf"}, method="POST")
        try:
            urllib.request.urlopen(http, timeout=self._timeout).read()
        except urllib.error.HTTPError as error:
            raise ReplayError(f"{self._endpoint} answered HTTP {error.code} for {signal}") from None
        except OSError as error:
            raise ReplayError(f"{self._endpoint} is unreachable: {error}") from None

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()


def sources(run_dir: Path, everything: bool) -> list[tuple[str, Path]]:
    """The whole record (``otlp/``), or what is undelivered: the spool and what the run's collector
    refused for good (``spool/rejected/``: a replay to another or a repaired collector may take it)."""
    folders = [run_dir / "otlp"] if everything else [run_dir / "spool", run_dir / "spool" / REJECTED_FOLDER]
    return [(signal, folder / name) for folder in folders for signal, name in SIGNAL_FILES.items()
            if (folder / name).is_file()]


def pending_lines(run_dir: Path, endpoint: str, everything: bool) -> int:
    state = _load_state(run_dir)
    total = 0
    for _signal, path in sources(run_dir, everything):
        total += max(0, _count_lines(path) - state.get(_key(run_dir, path, endpoint), 0))
    return total


def replay(run_dir: Path, endpoint: str, protocol: str = "http/protobuf", everything: bool = False,
           timeout_s: float = 10.0, progress: Callable[[int], None] | None = None,
           headers: Mapping[str, Mapping[str, str]] | None = None) -> ReplayResult:
    """``headers``: per signal, as ``OTEL_EXPORTER_OTLP_[SIGNAL_]HEADERS`` give them (auth, tenant)."""
    state = _load_state(run_dir)
    result = ReplayResult()
    sender = _Sender(endpoint, protocol, timeout_s, headers or {})
    try:
        for signal, path in sources(run_dir, everything):
            key = _key(run_dir, path, endpoint)
            done = state.get(key, 0)
            with open(path, "rb") as handle:
                for number, line in enumerate(handle, start=1):
                    if number <= done:
                        result.already_sent += 1
                        continue
                    if line.strip():
                        try:
                            request = to_request(signal, line)
                        except (ValueError, json_format.ParseError):
                            result.corrupt.append(f"{path}: line {number} is not a valid OTLP-JSON {signal} line")
                            request = None
                        if request is not None:
                            try:
                                sender.send(signal, request)
                            except ReplayError as error:
                                raise ReplayError(f"{error} ({path}: line {number})") from None
                            result.sent[signal] = result.sent.get(signal, 0) + 1
                    state[key] = number
                    _save_state(run_dir, state)
                    if progress is not None:
                        progress(1)
    finally:
        sender.close()
    return result


def _key(run_dir: Path, path: Path, endpoint: str) -> str:
    return f"{path.relative_to(run_dir)} -> {endpoint.rstrip('/')}"


def _count_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(1 for _ in handle)


def _load_state(run_dir: Path) -> dict[str, int]:
    try:
        return json.loads((run_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _save_state(run_dir: Path, state: dict[str, int]) -> None:
    temporary = run_dir / (STATE_FILE + ".tmp")
    temporary.write_text(json.dumps(state, indent=1))
    temporary.replace(run_dir / STATE_FILE)
