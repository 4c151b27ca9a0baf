"""The one OTLP sender: resolved :class:`Target`s per signal, and the SDK's exporters built from them.

:func:`targets` turns the resolved :class:`~lezea_otel.config.settings.Settings` into one
:class:`Target` per OTLP signal, with every ``OTEL_EXPORTER_OTLP_*`` meaning applied the way the
specification says, not the way the Python exporters read the environment:

- timeouts are **milliseconds** (Settings converts them; the exporters are handed seconds);
- a base endpoint gets ``/v1/<signal>`` for HTTP, a per-signal one is used verbatim, gRPC takes either as is;
- a gRPC ``http://`` endpoint is plaintext and ``https://`` is TLS whatever ``INSECURE`` says (the
  scheme wins); without a scheme ``INSECURE`` decides and unset means TLS;
- ``COMPRESSION=none`` is a value (the gRPC constructor raises on it when it reads it itself);
- ``OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL`` picks one signal's transport.

:func:`exporters` hands every value to the constructors. A few of them still read a variable that
no argument overrides (the HTTP exporters merge ``*_HEADERS`` into what they are given and read the
certificate variables when given none; the gRPC ones parse ``<SIGNAL>_TIMEOUT`` even when given a
timeout, and raise on a non-number; they read ``*_HEADERS`` when given no headers). Where such a
variable holds something the target does not say (a value Settings rejected), it is hidden from
this process's environment while that one exporter is built. In the usual case nothing is touched.
Over HTTPS the CA file must also beat ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``, which requests
otherwise prefers (see :class:`_CertificateFirst`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Final

import requests
from opentelemetry.sdk.metrics.export import MetricExporter
from opentelemetry.sdk.trace.export import SpanExporter

from lezea_otel.config.parsers import Invalid
from lezea_otel.config.parsers import headers as parse_headers
from lezea_otel.config.settings import Settings
from lezea_otel.exporter.logs import LogRecordExporter

Exporter = SpanExporter | MetricExporter | LogRecordExporter
GRPC: Final = "grpc"
HTTP: Final = "http/protobuf"
_CREDENTIAL_PROVIDERS: Final = "opentelemetry_otlp_credential_provider"
_RETRYABLE_CODES: Final = "OTEL_PYTHON_EXPORTER_OTLP_GRPC_RETRYABLE_ERROR_CODES"


@dataclass(frozen=True)
class Target:
    """Where and how one signal is sent, fully resolved: the exporter built from it reads nothing else."""

    endpoint: str
    """HTTP: the full URL (``…/v1/<signal>``). gRPC: ``scheme://host:port`` or ``host:port``."""
    protocol: str
    """``grpc`` or ``http/protobuf``."""
    headers: dict[str, str] = field(repr=False)
    """Sent with every export; never shown (they carry credentials)."""
    timeout_s: float
    """Per export, retries included (the specification's variables say milliseconds)."""
    compression: str | None
    """``gzip`` or ``deflate``; ``None``: uncompressed."""
    insecure: bool | None
    """gRPC: plaintext instead of TLS, already decided from the scheme and ``INSECURE``. HTTP: ``None``
    (the URL's scheme decides)."""
    certificate: Path | None
    """CA file the collector's certificate is verified with; ``None``: the system's (HTTP) or gRPC's roots."""
    client_key: Path | None
    client_certificate: Path | None
    credential_provider: str | None = None
    """An installed ``opentelemetry_otlp_credential_provider`` entry point (a ``requests.Session`` for
    HTTP, ``grpc.ChannelCredentials`` for gRPC); it replaces the certificate files."""
    retryable_codes: tuple[str, ...] | None = None
    """gRPC status codes retried; ``None``: the exporter's own list."""

    @property
    def tls(self) -> bool:
        if self.protocol == GRPC:
            return not self.insecure
        return self.endpoint.lower().startswith("https://")


def targets(settings: Settings) -> dict[str, Target]:
    """One :class:`Target` per signal sent over OTLP (``settings.otlp_signals``), in signal order."""
    return {signal: _target(settings, signal) for signal in sorted(settings.otlp_signals)}


def _target(settings: Settings, signal: str) -> Target:
    own = settings.signal_values[signal]
    protocol = _protocol(settings, own)
    endpoint = _endpoint(settings, own, signal, protocol)
    codes = settings.sdk.get("grpc_retryable_codes") if protocol == GRPC else None
    return Target(
        endpoint=endpoint,
        protocol=protocol,
        headers=dict(own["headers"]),
        timeout_s=float(own["timeout"]),
        compression=None if own["compression"] == "none" else own["compression"],
        insecure=_insecure(endpoint, own["insecure"]) if protocol == GRPC else None,
        certificate=_path(own["certificate"]),
        client_key=_path(own["client_key"]),
        client_certificate=_path(own["client_certificate"]),
        credential_provider=own[f"{'grpc' if protocol == GRPC else 'http'}_credential_provider"],
        retryable_codes=tuple(codes.split(",")) if codes else None,
    )


def _protocol(settings: Settings, own: Mapping[str, Any]) -> str:
    """Ours (argument, ``LEZEA_OTLP_PROTOCOL``) for all signals, else the signal's own, else the
    generic one."""
    if settings.sources.get("protocol", "default") not in ("default", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        return settings.protocol
    return str(own.get("signal_protocol") or settings.protocol)


def _endpoint(settings: Settings, own: Mapping[str, Any], signal: str, protocol: str) -> str:
    """Ours for all signals, else the per-signal URL (verbatim), else the base URL; a base URL gets
    ``/v1/<signal>`` over HTTP. The same rule as ``Settings.otlp_endpoints``, but per signal's protocol."""
    base = settings.endpoint or (None if own["signal_endpoint"] else settings.otel_endpoint)
    if base is None:
        return str(own["signal_endpoint"])
    return base if protocol == GRPC else base.rstrip("/") + f"/v1/{signal}"


def _insecure(endpoint: str, setting: str | None) -> bool:
    scheme = endpoint.split("://", 1)[0].lower() if "://" in endpoint else ""
    if scheme in ("http", "https"):
        return scheme == "http"
    return setting == "true"


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def describe(targets: Mapping[str, Target]) -> str:
    """One line for the console and the run summary: ``OTLP http/protobuf http://h:4318 [logs, traces]``;
    signals that go elsewhere get a group of their own (joined by ``; ``). Headers are never shown."""
    groups: dict[tuple[str, str], list[str]] = {}
    for signal, target in sorted(targets.items()):
        shown = target.endpoint.removesuffix(f"/v1/{signal}") if target.protocol == HTTP else target.endpoint
        if target.protocol == GRPC and target.tls and not shown.lower().startswith("https://"):
            shown += " (TLS)"  # a scheme-less endpoint: TLS is not visible in the URL
        groups.setdefault((target.protocol, shown), []).append(signal)
    return "; ".join(f"OTLP {protocol} {shown} [{', '.join(signals)}]"
                     for (protocol, shown), signals in groups.items())


def exporters(targets: Mapping[str, Target]) -> dict[str, Exporter]:
    """The SDK's OTLP exporter per signal, built from its target alone.

    Raises what the constructors raise, and ``OSError`` for a certificate file that cannot be read,
    ``RuntimeError``/``TypeError`` for a credential provider that is missing or makes the wrong type:
    the caller decides whether that means "local only"."""
    return {signal: exporter(signal, target) for signal, target in targets.items()}


def exporter(signal: str, target: Target) -> Exporter:
    """One signal's exporter (``traces``, ``metrics`` or ``logs``)."""
    build = _grpc_exporter if target.protocol == GRPC else _http_exporter
    with _hidden(_contradicting(signal, target, os.environ)):
        return build(signal, target)


def _grpc_exporter(signal: str, target: Target) -> Exporter:
    import grpc  # type: ignore[import-untyped]
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter  # no public path yet
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    credentials = None
    if not target.insecure:
        credentials = (_provided(target.credential_provider, grpc.ChannelCredentials)
                       if target.credential_provider else
                       grpc.ssl_channel_credentials(root_certificates=_read(target.certificate),
                                                    private_key=_read(target.client_key),
                                                    certificate_chain=_read(target.client_certificate)))
    compression = {None: grpc.Compression.NoCompression, "gzip": grpc.Compression.Gzip,
                   "deflate": grpc.Compression.Deflate}[target.compression]
    codes = (frozenset(grpc.StatusCode[code] for code in target.retryable_codes)
             if target.retryable_codes else None)
    kind: Any = {"traces": OTLPSpanExporter, "metrics": OTLPMetricExporter, "logs": OTLPLogExporter}[signal]
    made: Exporter = kind(
        endpoint=target.endpoint, insecure=bool(target.insecure), credentials=credentials,
        # gRPC metadata keys: lower case
        headers={key.lower(): value for key, value in target.headers.items()},
        timeout=target.timeout_s, compression=compression, retryable_error_codes=codes)
    return made


def _http_exporter(signal: str, target: Target) -> Exporter:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter  # no public path yet
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    session = (_provided(target.credential_provider, requests.Session) if target.credential_provider
               else _CertificateFirst())  # given: the exporter does not look for a provider itself
    kind: Any = {"traces": OTLPSpanExporter, "metrics": OTLPMetricExporter, "logs": OTLPLogExporter}[signal]
    made: Exporter = kind(
        endpoint=target.endpoint, certificate_file=_text(target.certificate),
        client_key_file=_text(target.client_key), client_certificate_file=_text(target.client_certificate),
        headers=dict(target.headers), timeout=target.timeout_s,
        compression=Compression(target.compression or "none"), session=session)
    return made


class _CertificateFirst(requests.Session):
    """A session on which the exporter's CA file beats ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE``.

    The HTTP exporter puts ``certificate_file`` on the session (``session.verify``) and sends each
    request with ``verify=None``; requests then takes a CA bundle named in the environment over the
    session's own, so ``OTEL_EXPORTER_OTLP_CERTIFICATE`` loses wherever those are set (many
    distributions and CI images set them). The session's file is handed in as the request's.

    The merged settings are kept per request shape: requests otherwise scans the whole environment for
    proxies on every export (0.2 ms here, 1.6 ms in a SLURM job's environment of ~300 variables), and an
    exporter sends to three URLs in an environment that does not change."""

    def __init__(self) -> None:
        super().__init__()
        self._merged: dict[tuple[Any, ...], dict[str, Any]] = {}

    def merge_environment_settings(self, url: str, proxies: Any, stream: Any, verify: Any,
                                   cert: Any) -> dict[str, Any]:
        if verify is None and isinstance(self.verify, str):
            verify = self.verify
        try:
            key: tuple[Any, ...] = (url, tuple(sorted((proxies or {}).items())), stream, verify, cert)
            hash(key)
        except TypeError:  # an unhashable argument: merged as requests does, every time
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        merged = self._merged.get(key)
        if merged is None:
            merged = super().merge_environment_settings(url, proxies, stream, verify, cert)
            if len(self._merged) < 64:
                self._merged[key] = merged
        return {**merged, "proxies": dict(merged.get("proxies") or {})}


def _read(file: Path | None) -> bytes | None:
    return file.read_bytes() if file is not None else None


def _text(file: Path | None) -> str | None:
    return str(file) if file is not None else None


def _provided(name: str, kind: type) -> Any:
    """What the named credential provider entry point makes (the exporters' own lookup, done here)."""
    found = list(entry_points(group=_CREDENTIAL_PROVIDERS, name=name))
    if not found:
        raise RuntimeError(f"no {_CREDENTIAL_PROVIDERS} entry point named {name!r} is installed")
    made = found[0].load()()
    if not isinstance(made, kind):
        raise TypeError(f"credential provider {name!r} gave {type(made).__name__}, not {kind.__name__}")
    return made


# --- what the constructors read although they were given the value --------------------------------

def _contradicting(signal: str, target: Target, environ: Mapping[str, str]) -> tuple[str, ...]:
    """The variables the constructor reads despite its arguments whose value would change the result
    (or make it raise). Empty unless a variable holds something Settings rejected."""
    def pair(suffix: str) -> tuple[str, str]:
        return f"OTEL_EXPORTER_OTLP_{signal.upper()}_{suffix}", f"OTEL_EXPORTER_OTLP_{suffix}"

    def present(*names: str) -> list[str]:
        return [name for name in names if environ.get(name)]

    hide: list[str] = []
    if target.protocol == GRPC:
        timeout = pair("TIMEOUT")[0]  # float()-ed before the argument is looked at
        if timeout in environ and not _is_number(environ[timeout]):
            hide.append(timeout)
        if not target.headers:  # empty headers: the variables are used instead
            hide += present(*pair("HEADERS"))
        if target.retryable_codes is None:
            hide += present(_RETRYABLE_CODES)
        return tuple(hide)
    own, generic = pair("HEADERS")  # merged under the given headers: only keys we do not give matter
    read = environ.get(own) or environ.get(generic) or ""
    try:
        extra = set(parse_headers(read)) - {key.lower() for key in target.headers}
    except Invalid:
        extra = {"(unreadable)"}
    if read.strip() and extra:
        hide += present(own, generic)
    for suffix, given in (("CERTIFICATE", target.certificate), ("CLIENT_KEY", target.client_key),
                          ("CLIENT_CERTIFICATE", target.client_certificate)):
        if given is None:  # read when not given
            hide += present(*pair(suffix))
    return tuple(hide)


def _is_number(raw: str) -> bool:
    try:
        float(raw)
    except ValueError:
        return False
    return True


_environ_lock = threading.Lock()


@contextmanager
def _hidden(names: tuple[str, ...]) -> Iterator[None]:
    """``names`` are absent from ``os.environ`` inside (process-wide: kept to one constructor call)."""
    if not names:
        yield
        return
    with _environ_lock:
        saved = {name: os.environ.pop(name) for name in names if name in os.environ}
        try:
            yield
        finally:
            os.environ.update(saved)
