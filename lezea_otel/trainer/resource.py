"""The OTel resource of a run: who is sending (service, process, host, rank) and which experiment.

Every span, metric point and log record carries it, so Prometheus, Tempo and Loki can filter by
experiment. It is resolved here, in the trainer (its process, its environment), without the SDK, and
written into the ``experiment_start`` record; the exporter builds the SDK ``Resource`` from that.
Git facts come from gitpython; no repository, or no git binary, is fine.
"""

from __future__ import annotations

import os
import platform
import urllib.parse
import uuid
from collections.abc import Mapping
from typing import Any

from lezea_otel import semconv as names
from lezea_otel.util import values
from lezea_otel.util.environment import host_name


def git_facts(path: str | None = None) -> dict[str, Any]:
    """Commit, branch, dirty flag and a credential-free remote URL; empty outside a repository."""
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    try:
        import git
    except Exception:  # noqa: BLE001 - ImportError, or no git executable
        return {}
    try:
        repo = git.Repo(path or os.getcwd(), search_parent_directories=True)
    except Exception:  # noqa: BLE001 - InvalidGitRepositoryError, NoSuchPathError
        return {}
    facts: dict[str, Any] = {}
    try:
        facts["commit"] = repo.head.commit.hexsha
    except Exception:  # noqa: BLE001 - a repository without commits
        return {}
    try:
        facts["branch"] = None if repo.head.is_detached else repo.active_branch.name
        facts["dirty"] = repo.is_dirty(untracked_files=False)
        remote = next(iter(repo.remotes), None)
        if remote is not None:
            facts["remote"] = values.scrub_text(next(remote.urls, ""))
    except Exception:  # noqa: BLE001
        pass
    finally:
        repo.close()
    return facts


def build_resource(
    *, service_name: str, experiment_id: str, experiment_name: str, purpose: str, tags: list[str],
    git: dict[str, Any], version: str, parent_pid: int | None = None,
    launch: Mapping[str, Any] | None = None, environment_attributes: str | None = None,
) -> dict[str, Any]:
    """The resource attributes: ``environment_attributes`` (``OTEL_RESOURCE_ATTRIBUTES`` as the settings
    checked it: ``k=v`` pairs, values percent-decoded as the SDK does) under ours, which win where both
    speak. ``launch``: the ``dl.*`` attributes of the rank (``Launch.attributes``)."""
    attributes: dict[str, Any] = {
        names.SERVICE_NAME: service_name,
        names.SERVICE_VERSION: version,
        names.SERVICE_INSTANCE_ID: str(uuid.uuid4()),
        names.HOST_NAME: host_name(),
        names.PROCESS_PID: os.getpid(),
        names.PROCESS_RUNTIME_NAME: platform.python_implementation().lower(),
        names.PROCESS_RUNTIME_VERSION: platform.python_version(),
        names.EXPERIMENT_ID: experiment_id,
        names.EXPERIMENT_NAME: experiment_name,
        names.EXPERIMENT_PURPOSE: purpose,
        names.EXPERIMENT_TAGS: list(tags),
        **(launch or {}),
    }
    if parent_pid is not None:
        attributes[names.PROCESS_PARENT_PID] = parent_pid
    if git.get("commit"):
        attributes[names.VCS_REVISION] = git["commit"]
    if git.get("branch"):
        attributes[names.VCS_BRANCH] = git["branch"]
    if "dirty" in git:
        attributes[names.VCS_DIRTY] = bool(git["dirty"])
    if git.get("remote"):
        attributes[names.VCS_REPOSITORY_URL] = git["remote"]
    given: dict[str, Any] = {}
    for item in (environment_attributes or "").split(","):
        key, separator, value = item.partition("=")
        if separator and key.strip():
            given[key.strip()] = urllib.parse.unquote(value.strip())
    return {**given, **attributes}
