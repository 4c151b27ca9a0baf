"""GPU check: run the observers against the real NVIDIA driver and compare with nvidia-smi.

    python scripts/gpu_check.py [--seconds 5]

Prints what lezea_otel would export next to `nvidia-smi --query-gpu` readings and exits 1 on any
mismatch in identity (UUID, name) or units (memory in bytes, power in W, utilization as a ratio).
With torch importable, a small matmul loop keeps the GPU busy while sampling.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from lezea_otel.exporter.observers import Observers

QUERY = "uuid,name,utilization.gpu,memory.used,memory.total,power.draw,temperature.gpu"


def smi() -> dict[str, dict[str, str]]:
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"],
                             check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"nvidia-smi failed: {error}")
        return {}
    rows = {}
    for line in out.strip().splitlines():
        values = [v.strip() for v in line.split(",")]
        rows[values[0]] = dict(zip(QUERY.split(","), values, strict=False))
    return rows


def load(stop: threading.Event) -> None:
    try:
        import torch
    except ImportError:
        return
    if not torch.cuda.is_available():
        return
    a = torch.randn(4096, 4096, device="cuda")
    while not stop.is_set():
        (a @ a).sum().item()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    stop = threading.Event()
    worker = threading.Thread(target=load, args=(stop,), daemon=True)
    worker.start()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    problems: list[str] = []
    observers = Observers(provider.get_meter("gpu_check"), {}, 1.0, "all",
                          lambda call, problem, detail: print(f"warning: {problem}: {detail}"), print)
    observers.start()
    token = observers.scope_enter()
    time.sleep(args.seconds)
    scope = observers.scope_exit(token)
    observers.sample()
    reference = smi()
    stop.set()
    points: dict[tuple[str, str], tuple[float, str, dict]] = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in metric.data.data_points:
                    hw_id = point.attributes.get("hw.parent") or point.attributes.get("hw.id")
                    if hw_id:
                        points[(metric.name, hw_id)] = (point.value, metric.unit, dict(point.attributes))
    if not reference:
        problems.append("nvidia-smi lists no GPU")
    for uuid, row in reference.items():
        print(f"\n{uuid} {row['name']}")

        def check(name: str, unit: str, expected: float, tolerance: float, scale: float = 1.0, *,
                  uuid: str = uuid) -> None:  # this GPU's id, bound now (check runs within the iteration)
            value = points.get((name, uuid))
            if value is None:
                problems.append(f"{uuid}: {name} missing")
                return
            shown = value[0] * scale
            print(f"  {name:28} {value[0]:>16.4f} {value[1]:4}  nvidia-smi {expected:.4f} (x{scale:g})")
            if value[1] != unit:
                problems.append(f"{uuid}: {name} unit {value[1]!r}, expected {unit!r}")
            if abs(shown - expected) > tolerance:
                problems.append(f"{uuid}: {name} {shown} vs nvidia-smi {expected} (tolerance {tolerance})")

        identity = points.get(("hw.gpu.utilization", uuid))
        if identity is None or identity[2].get("hw.name") != row["name"]:
            problems.append(f"{uuid}: identity mismatch ({identity and identity[2].get('hw.name')!r})")
        check("hw.gpu.memory.limit", "By", float(row["memory.total"]), 2.0, 1 / 2**20)
        check("hw.gpu.memory.usage", "By", float(row["memory.used"]), 512.0, 1 / 2**20)
        check("hw.gpu.utilization", "1", float(row["utilization.gpu"]), 60.0, 100.0)
        if row["power.draw"] not in ("[N/A]", "[Not Supported]"):
            check("hw.power", "W", float(row["power.draw"]), 100.0)
        check("hw.temperature", "Cel", float(row["temperature.gpu"]), 5.0)
    print(f"\nscope summary over {args.seconds:.0f} s: {scope}")
    print(f"totals: {observers.totals()}")
    observers.stop()
    provider.shutdown()
    for problem in problems:
        print(f"MISMATCH {problem}")
    print("GPU check " + ("FAILED" if problems else "passed"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
