"""The trainer's side of its exporter: a thread inside the trainer, a process beside it, or none.

The trainer never waits for the exporter while it trains: a process is spawned (fork + exec, a few
milliseconds) and watched by a thread blocked in ``wait()``; if it dies before the run ends, the
trainer warns once and starts another, which resumes from the persisted cursors. At finalize the
trainer waits, within ``LEZEA_SHUTDOWN_TIMEOUT``, for the exporter to deliver to the end record.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from lezea_otel import semconv as names
from lezea_otel.config.settings import Settings
from lezea_otel.util.readable import error_text
from lezea_otel.util.safety import logger

Warn = Callable[[str, str, str], None]
MAX_RESTARTS = 3
WAIT_POLL_S = 0.05
"""At finalize, how often the exporter process's report is read while the trainer waits for it."""


class ExporterLink:
    """Starts, watches and ends the run's exporter; ``mode`` is ``LEZEA_EXPORTER`` (thread/process/none)."""

    def __init__(self, mode: str, run_dir: Path, settings: Settings, extra_exporters: Sequence[Any],
                 warn: Warn, build_service: Callable[..., tuple[Any, list[str]]] | None = None) -> None:
        """``build_service``: the exporter's assembly (``exporter.assemble.build_service``), for thread mode;
        given by the facade, so the trainer side never imports the exporter side."""
        self.mode = mode
        self._build_service = build_service
        self.run_dir = run_dir
        self._settings = settings
        # The settings a process re-resolves from its (inherited) environment, plus what only arguments said.
        self._options = {"runs_dir": str(settings.runs_dir), "service_name": settings.service_name,
                         "endpoint": settings.endpoint, "protocol": settings.protocol,
                         "quiet": settings.quiet}
        self._extra = extra_exporters
        self._warn = warn
        self._service: Any = None
        self._process: subprocess.Popen[bytes] | None = None
        self._closing = threading.Event()
        self._restarts = 0
        self._port: int | None = None
        self.targets: list[str] = []
        self.report: dict[str, Any] = {}
        self.background: int | None = None
        """The exporter process left delivering the run after finalize's bound (its pid)."""

    def start(self, prometheus_port: int | None, trainer_pid: int) -> None:
        self._port = prometheus_port
        if self.mode == "thread":
            if self._build_service is None:
                raise RuntimeError("thread mode needs the exporter's assembly (build_service)")
            self._service, self.targets = self._build_service(
                self.run_dir, self._settings, trainer_pid=trainer_pid, extra_exporters=self._extra,
                prometheus_port=prometheus_port, warn=self._warn, info=logger.info)
            self._service.start()
        elif self.mode == "process":
            self.targets = self._planned_targets(prometheus_port)
            self._spawn(trainer_pid)

    @property
    def observes(self) -> bool:
        """Whether an exporter watches this trainer's resources (its totals go into the audit at finalize)."""
        return self.mode in ("thread", "process") and self._settings.observers

    def observed_totals(self) -> dict[str, Any]:
        """The exporter's resource totals so far (thread mode); a process keeps them in its report."""
        if self._service is None:
            return {}
        totals: dict[str, Any] = self._service.observed_totals()
        return totals

    def sample_observers(self) -> None:
        """Thread mode: the exporter's observers take a sample now (tests)."""
        if self._service is not None:
            self._service.sample_observers()

    def scope_summaries(self) -> dict[str, Any]:
        """Resources measured per scope path / phase name (live in thread mode; the report's in process
        mode)."""
        if self._service is not None:
            summaries: dict[str, Any] = self._service.scope_summaries()
            return summaries
        return dict(self.current().get("scope_resources") or {})

    def sync(self) -> None:
        """Thread mode: deliver what the audit holds now (the caller flushed it); tests read the result."""
        if self._service is not None:
            self._service.sync()

    def local_position(self) -> int:
        """The last record (seq) of the run's own audit that reached the local files (0: none, or unknown)."""
        try:
            cursor = orjson.loads((self.run_dir / names.EXPORTER_DIR / names.CURSOR_FILE.format(
                destination=names.LOCAL_DESTINATION, audit=names.MAIN_AUDIT)).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return 0
        seq = cursor.get("seq") if isinstance(cursor, dict) else None
        return seq if type(seq) is int else 0

    def current(self) -> dict[str, Any]:
        """The delivery report so far (live in thread mode; from the exporter's file once it ended)."""
        if self._service is not None and not self.report:
            return {"crashed": False, "problems": [], "destinations": self._service.report()}
        if self._process is not None and not self.report:
            return self._read_report()  # the exporter process rewrites it every second
        return self.report

    def close(self, timeout_s: float) -> bool:
        """The end record is on disk: wait for the exporter to deliver it; True when it did in time."""
        self._closing.set()
        done = True
        if self._service is not None:
            done = self._service.close(timeout_s)
            self.report = {"crashed": False, "problems": [], "destinations": self._service.report()}
        elif self._process is not None:
            done = self._wait_for_process(self._process, timeout_s)
            self.report = self._read_report()
        return done

    def _wait_for_process(self, process: subprocess.Popen[bytes], timeout_s: float) -> bool:
        """Until the exporter process ends, having delivered the run; or, within ``timeout_s``, until what
        is left is only a collector taking nothing (its report says the run's files are whole and the
        collector ``stalled``). A process still at work then goes on in the background, within
        ``LEZEA_FINISH_WINDOW`` (:attr:`background`); with a window of 0 it is stopped (SIGTERM: it offers
        what it holds once more and writes its report). True when it ended."""
        deadline = time.monotonic() + timeout_s
        window = self._settings.finish_window_s
        while process.poll() is None:
            if time.monotonic() >= deadline or (window and _only_collector_left(self._read_report())):
                break
            time.sleep(WAIT_POLL_S)
        else:
            return True
        if window:
            self.background = process.pid
            return False
        process.terminate()
        try:
            process.wait(min(2.0, timeout_s))
        except subprocess.TimeoutExpired:
            process.kill()
        return False

    def delivery(self) -> dict[str, Any]:
        """``summary["delivery"]``: what the exporter delivered, per destination and signal."""
        return delivery_report(self.mode, self.current())

    def finish(self, timeout_s: float, audit_seq: int, audit_path: Path) -> None:
        """:meth:`close`, and one warning naming what is behind when the exporter did not deliver to the end
        in time: the run's files (``audit_seq``: the audit's last record; the exporter had not caught up), or
        the collector; and who finishes it: the exporter process in the background, or ``lezea-otel
        export`` (an exporter thread ends with the process)."""
        if self.close(timeout_s):
            return
        behind = audit_seq - self.local_position()
        left = ", ".join(f"{counts['left_in_audit']} {signal}" for signal, counts
                         in self.delivery()["signals"].items() if counts.get("left_in_audit"))
        if behind > 0:  # the exporter itself had not caught up (a very fast loop, a busy machine)
            reason = f"the run's files are not complete yet ({behind} records of the audit to go)"
        elif self._settings.otlp_signals:
            reason = "the collector has not taken the whole run (down, refusing or hanging)" + (
                f": {left} left" if left else "")
        else:
            reason = "the exporter did not finish the run's files"
        if self.background is not None:
            retried = (f", the collector retried for up to LEZEA_FINISH_WINDOW="
                       f"{self._settings.finish_window_s:g} s" if self._settings.otlp_signals else "")
            then = (f"the exporter (pid {self.background}) finishes it in the background{retried}; "
                    f"`lezea-otel show {self.run_dir}` says how it ended")
        else:
            then = f"`lezea-otel export {self.run_dir}` sends the rest"
        logger.warning("finalize: %s within LEZEA_SHUTDOWN_TIMEOUT=%.1f s; %s (the audit %s keeps "
                       "everything)", reason, timeout_s, then, audit_path)

    # --- process mode -----------------------------------------------------------------------------

    def _planned_targets(self, prometheus_port: int | None) -> list[str]:
        """What the exporter process delivers to, as the settings say (it reports problems itself)."""
        settings = self._settings
        targets = [f"files {self.run_dir / names.OTLP_DIR}"]
        if settings.otlp_signals:
            targets.append(f"OTLP {settings.protocol} "
                           f"{settings.endpoint or '(OTEL_EXPORTER_OTLP_* variables)'}"
                           f" [{', '.join(sorted(settings.otlp_signals))}]")
        if prometheus_port:
            targets.append(f"/metrics on {settings.prometheus_addr}:{prometheus_port}")
        return targets

    def _spawn(self, trainer_pid: int) -> None:
        log = self.run_dir / names.EXPORTER_DIR / "exporter.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "lezea_otel.exporter", str(self.run_dir), "--pid", str(trainer_pid),
                   "--options", orjson.dumps(self._options).decode()]
        if self._port:
            command += ["--prometheus-port", str(self._port)]
        with open(log, "ab") as output:
            self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                                             start_new_session=True, close_fds=True)
        threading.Thread(target=self._watch, args=(self._process, trainer_pid), daemon=True,
                         name="lezea-otel-exporter-watch").start()

    def _watch(self, process: subprocess.Popen[bytes], trainer_pid: int) -> None:
        code = process.wait()
        if self._closing.is_set():
            return
        self._restarts += 1
        if self._restarts > MAX_RESTARTS:
            self._warn("exporter", "the exporter process keeps failing",
                       f"exit code {code}; the audit keeps everything: `lezea-otel export {self.run_dir}`")
            return
        if self._restarts == 1:
            self._warn("exporter", f"the exporter process ended early (exit code {code})",
                       "a new one resumes from its cursor; training is unaffected")
        time.sleep(min(1.0, 0.1 * self._restarts))
        if not self._closing.is_set():
            self._spawn(trainer_pid)

    def _read_report(self) -> dict[str, Any]:
        path = self.run_dir / names.EXPORTER_DIR / names.EXPORTER_REPORT_FILE
        try:
            report = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as error:
            return {"problems": [f"no exporter report: {error_text(error)}"]}
        return report if isinstance(report, dict) else {}


def _only_collector_left(report: dict[str, Any]) -> bool:
    """The exporter's report says the run's files are whole and a collector takes nothing (a process whose
    destinations are all done is about to send its last metrics and end: it is waited for)."""
    destinations = report.get("destinations") or {}
    local = destinations.get(names.LOCAL_DESTINATION) or {}
    others = [d or {} for name, d in destinations.items() if name != names.LOCAL_DESTINATION]
    return bool(report.get("finishing")) and bool(local.get("done")) and \
        any(d.get("stalled") and not d.get("done") for d in others)


def delivery_report(mode: str, report: dict[str, Any]) -> dict[str, Any]:
    """``summary["delivery"]`` from the exporter's report: per signal, for the collector (``signals``) and
    the local files (``files``), what was produced, exported, dropped (a destination that does not retry),
    rejected (refused for good by a collector that took the rest), and left in the audit for
    ``lezea-otel export``. A collector's follower reads nothing new while a batch is held, so the spans
    and log records the run produced are the local files' count (they read everything, never hold)."""
    destinations = report.get("destinations") or {}
    local = (destinations.get(names.LOCAL_DESTINATION) or {}).get("signals") or {}

    def signals(name: str) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for signal, counts in ((destinations.get(name) or {}).get("signals") or {}).items():
            produced, exported = int(counts.get("produced", 0)), int(counts.get("exported", 0))
            if name != names.LOCAL_DESTINATION and signal != "metrics":
                produced = max(produced, int((local.get(signal) or {}).get("produced", 0)))
            dropped, rejected = int(counts.get("dropped", 0)), int(counts.get("rejected", 0))
            left = max(0, produced - exported - dropped - rejected)
            # cumulative batches: 1 while the final values are not there
            if name != names.LOCAL_DESTINATION and signal == "metrics":
                left = int(counts.get("held", left))
            out[signal] = {"produced": produced, "exported": exported, "dropped": dropped,
                           "rejected": rejected, "left_in_audit": left,
                           "failed_attempts": int(counts.get("failed_attempts", 0))}
        return out

    problems = [*report.get("problems", [])]
    for destination in destinations.values():
        problems.extend((destination or {}).get("problems") or [])
    return {"mode": "otlp" if "otlp" in destinations else "local", "exporter": mode,
            "signals": signals("otlp"), "files": signals(names.LOCAL_DESTINATION), "problems": problems[:100]}
