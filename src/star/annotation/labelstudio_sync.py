"""A round's tasks pushed into a Label Studio project, and its annotations pulled back, through label-studio-sdk.

push: create the project (labeling config from star.annotation.labelstudio) unless one is named or was
      recorded for this run, add the open round's unlabelled items that are not in it yet (matched by
      star_id and star_round; predictions included), and record round-<t>/labelstudio/project.json.
pull: download the project's standard JSON export (every task), keep it as
      round-<t>/labelstudio/export-<UTC time>.json before anything else, then import it with
      star.annotation.labelstudio_import: the same checks, all or nothing.

The SDK (`pip install "star-al[labelstudio]"`) is imported only here and only when called; the API
key is read from an environment variable, never from the command line.
"""

from __future__ import annotations

import contextlib
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from star.annotation.labelstudio import ANSWER, labeling_config, labelstudio_dir, labelstudio_tasks
from star.annotation.labelstudio_import import DEFAULT_LS_ANNOTATOR, ImportReport, import_labelstudio
from star.annotation.queries import OpenRound, open_round
from star.errors import ConfigError, DataError
from star.store.io import atomic_write, read_json, write_json

DEFAULT_KEY_ENV = "LABEL_STUDIO_API_KEY"
_PIP = 'pip install "star-al[labelstudio]"  (or: pip install "label-studio-sdk>=2.0")'
PROJECT_FILE = "project.json"


def connect(url: str, api_key_env: str = DEFAULT_KEY_ENV) -> Any:
    """A label-studio-sdk client for `url`, with the API key from the environment variable `api_key_env`."""
    key = os.environ.get(api_key_env, "").strip()
    if not key:
        raise ConfigError(f"no Label Studio API key: the environment variable {api_key_env} is unset or empty",
                          hint=f"export {api_key_env}=TOKEN (Label Studio: Account & Settings > Personal Access "
                               "Token), or name another variable with --api-key-env")
    try:
        from label_studio_sdk import LabelStudio
    except ImportError:
        raise ConfigError("the Label Studio sync needs the label-studio-sdk package", hint=_PIP) from None
    return LabelStudio(base_url=url.rstrip("/"), api_key=key)


@contextlib.contextmanager
def _calling(url: str, what: str) -> Iterator[None]:
    """SDK and network failures as one StarError saying which call failed and what to check."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - the SDK raises ApiError, httpx errors or OSError
        status = getattr(e, "status_code", None)
        if status in (401, 403):
            raise ConfigError(f"Label Studio at {url} refused the API key while trying to {what} (HTTP {status})",
                              hint="check the token in the --api-key-env variable (a Personal Access Token, or a "
                                   "legacy token where the organization allows them)") from None
        if status is not None:
            body = str(getattr(e, "body", ""))[:300]
            raise DataError(f"Label Studio at {url} answered HTTP {status} while trying to {what}: {body}",
                            hint="check the project id and the server's log") from None
        raise ConfigError(f"could not reach Label Studio at {url} to {what}: {type(e).__name__}: {e}"[:400],
                          hint="start the server (`label-studio start`) or fix --url") from None


@dataclass(frozen=True)
class PushReport:
    """What one push did."""

    project: int
    created: bool
    pushed: int
    present: int
    round_index: int


def recorded_project(open_: OpenRound) -> dict[str, Any] | None:
    """The project a push recorded for this run (the latest round's record up to the open one), if any."""
    for t in range(open_.index, -1, -1):
        path = open_.run.round_dir(t) / "labelstudio" / PROJECT_FILE
        with contextlib.suppress(OSError, ValueError):
            record = read_json(path)
            if isinstance(record, dict) and isinstance(record.get("project"), int):
                return record
    return None


def resolve(open_: OpenRound, url: str | None, project: int | None) -> tuple[str, int | None]:
    """The server URL and project id: as given, else as recorded by an earlier push to the same server."""
    record = recorded_project(open_)
    if url is None:
        if record is None or not isinstance(record.get("url"), str):
            raise ConfigError("no Label Studio URL given and none recorded for this run",
                              hint="pass --url http://HOST:PORT (the server `label-studio start` printed)")
        url = record["url"]
    if project is None and record is not None and record.get("url") == url:
        project = record["project"]
    return url, project


def _check_config(project: Any, project_id: int) -> None:
    """Refuse a project whose labeling config has no `answer` control (its annotations could not be read)."""
    try:
        names = {el.get("name") for el in ET.fromstring(project.label_config or "<View/>").iter()}
    except ET.ParseError:
        names = set()
    if ANSWER not in names:
        raise ConfigError(f"Label Studio project {project_id}'s labeling config has no control named {ANSWER!r}",
                          hint="push without --project to create a project with star's config, or paste "
                               "labeling-config.xml from `star labelstudio export` into the project's settings")


def _project(client: Any, open_: OpenRound, url: str, project: int | None, title: str | None) -> tuple[int, bool]:
    """(project id, created): the named or recorded project, checked, or a new one with star's labeling config."""
    if project is not None:
        with _calling(url, f"read project {project}"):
            found = client.projects.get(id=project)
        _check_config(found, project)
        return project, False
    name = title or f"star {open_.run.path.name} ({open_.task.name})"
    with _calling(url, "create a project"):
        created = client.projects.create(title=name[:50], label_config=labeling_config(open_.task),
                                         show_collab_predictions=True, show_skip_button=True)
    return int(created.id), True


def _present(client: Any, url: str, project: int) -> set[tuple[str, int]]:
    """(star_id, star_round) of the tasks already in the project."""
    with _calling(url, f"list the tasks of project {project}"):
        tasks = list(client.tasks.list(project=project, fields="task_only", page_size=500))
    data = [getattr(t, "data", None) for t in tasks]
    return {(d.get("star_id"), d.get("star_round")) for d in data if isinstance(d, dict)}


def push_round(client: Any, run_dir: str | Path, url: str, project: int | None = None,
               title: str | None = None) -> PushReport:
    """Add the open round's unlabelled items to a Label Studio project (created if needed); record the project."""
    open_ = open_round(run_dir)
    pid, created = _project(client, open_, url, project, title)
    write_json(labelstudio_dir(open_) / PROJECT_FILE, {"url": url, "project": pid})
    present = set() if created else _present(client, url, pid)
    tasks = [t for t in labelstudio_tasks(open_) if (t["data"]["star_id"], t["data"]["star_round"]) not in present]
    if tasks:
        with _calling(url, f"import {len(tasks)} task(s) into project {pid}"):
            client.projects.import_tasks(id=pid, request=tasks)
    return PushReport(pid, created, len(tasks), len(open_.remaining()) - len(tasks), open_.index)


def pull_round(client: Any, run_dir: str | Path, url: str, project: int,
               annotator: str = DEFAULT_LS_ANNOTATOR) -> tuple[Path, ImportReport]:
    """Download the project's JSON export, keep it in the round's folder, and import it (all or nothing)."""
    open_ = open_round(run_dir)
    with _calling(url, f"export project {project}"):
        data = b"".join(client.projects.exports.download_sync(project, export_type="JSON", download_all_tasks=True))
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"{time.time() % 1:.6f}"[1:] + "Z"
    path = labelstudio_dir(open_) / f"export-{stamp}.json"
    atomic_write(path, data)  # kept before the import, whatever it finds
    return path, import_labelstudio(run_dir, path, annotator)
