"""What ``start()`` records about the machine and the code, through allow-lists only.

Nothing from the environment, argv or a git remote reaches the audit or a backend unless it is
named here (or in ``LEZEA_ENV_ALLOWLIST``), and even then values under secret-looking names and
token-shaped strings are redacted.
"""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import sys
from functools import lru_cache
from typing import Any

from lezea_otel.util import values

ENV_ALLOWLIST = (
    "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "NVIDIA_VISIBLE_DEVICES", "OMP_NUM_THREADS",
    "MKL_NUM_THREADS", "PYTHONHASHSEED", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE",
    "MASTER_PORT", "SLURM_JOB_ID", "SLURM_JOB_NAME", "SLURM_ARRAY_TASK_ID", "SLURM_PROCID",
    "SLURM_NTASKS", "SLURM_NODELIST", "PBS_JOBID", "LSB_JOBID", "KUBERNETES_SERVICE_HOST",
    "CONDA_DEFAULT_ENV", "VIRTUAL_ENV",
)
PACKAGES = (
    "torch", "torchvision", "jax", "jaxlib", "tensorflow", "numpy", "scipy", "pandas",
    "transformers", "accelerate", "deepspeed", "lightning", "pytorch-lightning", "gymnasium",
    "stable-baselines3", "ray", "opentelemetry-sdk", "lezea_otel",
)
_ARG_WITH_VALUE = ("--", "-")


def package_versions() -> dict[str, str]:
    """Installed versions, read from package metadata: nothing is imported (``importlib.metadata`` itself
    only here, at start: it costs ``import lezea_otel`` about 15 ms)."""
    from importlib import metadata

    found: dict[str, str] = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def scrubbed_argv(argv: list[str]) -> list[str]:
    """argv with the value of any secret-looking option redacted (``--token X``, ``--api-key=X``)."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(values.REDACTED)
            hide_next = False
            continue
        if arg.startswith(_ARG_WITH_VALUE):
            option, sep, _ = arg.partition("=")
            if values.looks_secret_key(option.lstrip("-")):
                if sep:
                    out.append(f"{option}={values.REDACTED}")
                else:
                    out.append(arg)
                    hide_next = True
                continue
        out.append(values.scrub_text(arg))
    return out


def environment_variables(extra_allowed: tuple[str, ...]) -> dict[str, str]:
    allowed = ENV_ALLOWLIST + extra_allowed
    return {
        name: values.REDACTED if values.looks_secret_key(name) else values.scrub_text(os.environ[name])
        for name in allowed
        if name in os.environ
    }


def gpus() -> list[dict[str, Any]]:
    """GPU names and driver through NVML; an empty list when there is no GPU, driver or pynvml."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return []
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        found = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            found.append({
                "index": index,
                "name": _text(pynvml.nvmlDeviceGetName(handle)),
                "uuid": _text(pynvml.nvmlDeviceGetUUID(handle)),
                "memory_bytes": int(memory.total),
                "driver": driver,
            })
        return found
    except Exception:  # noqa: BLE001
        return []
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@lru_cache(maxsize=1)
def host_name() -> str:
    return socket.gethostname()


def describe_environment(extra_allowed: tuple[str, ...] = ()) -> dict[str, Any]:
    """The environment event: Python, platform, CPU, memory, packages, GPUs, selected variables."""
    import psutil

    return {
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "platform": {"system": platform.system(), "release": platform.release(),
                     "machine": platform.machine(), "host": host_name()},
        "cpu": {"logical": psutil.cpu_count(logical=True), "physical": psutil.cpu_count(logical=False),
                "available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None},
        "memory_bytes": psutil.virtual_memory().total,
        "packages": package_versions(),
        "gpus": gpus(),
        "argv": scrubbed_argv(list(sys.argv)),
        "env": environment_variables(extra_allowed),
        "cwd": os.getcwd(),
    }
