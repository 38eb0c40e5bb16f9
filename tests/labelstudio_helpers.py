"""Label Studio as the tests see it: its JSON export written as Label Studio 1.23 writes it, and a fake SDK client.

Imported as `labelstudio_helpers` (pytest puts tests/, the folder of conftest.py, on sys.path).

The export's shape (keys, nesting, `was_cancelled`, `prediction`) was copied from a real Label Studio
1.23.2 export of a project made by `star labelstudio push`; tests/integration/test_labelstudio_server.py
checks the same round trip against a real server.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

#: One annotation to write: an answer (text), None for a skipped one, or a raw `result` list.
Given = str | None | list


def _result(kind: str, answer: str) -> list[dict[str, Any]]:
    value = {"choices": [answer]} if kind == "choices" else {"text": [answer]}
    return [{"value": value, "id": "r" + str(abs(hash(answer)) % 10**6), "from_name": "answer",
             "to_name": "question", "type": kind, "origin": "manual"}]


def annotation(ann_id: int, task_id: int, given: Given, kind: str) -> dict[str, Any]:
    """One annotation as Label Studio exports it."""
    cancelled = given is None
    result = [] if cancelled else (given if isinstance(given, list) else _result(kind, given))
    return {"id": ann_id, "completed_by": 1, "result": result, "was_cancelled": cancelled, "ground_truth": False,
            "created_at": "2026-12-03T14:52:34.589536Z", "updated_at": "2026-12-03T14:52:34.589574Z",
            "draft_created_at": None, "lead_time": 4.2, "prediction": {}, "result_count": len(result),
            "unique_id": f"u-{ann_id}", "import_id": None, "last_action": None, "bulk_created": False,
            "task": task_id, "project": 1, "updated_by": 1, "parent_prediction": None, "parent_annotation": None,
            "last_created_by": None}


def ls_export(tasks: list[dict[str, Any]], given: dict[str, list[Given]], kind: str = "textarea",
              first_id: int = 1) -> list[dict[str, Any]]:
    """Label Studio's JSON export of `tasks` (from tasks.json), annotated as `given` says (by star id)."""
    out, ann_ids = [], itertools.count(100)
    for task_id, task in enumerate(tasks, first_id):
        mine = given.get(task["data"].get("star_id"), [])
        anns = [annotation(next(ann_ids), task_id, g, kind) for g in mine]
        out.append({"id": task_id, "annotations": anns, "drafts": [], "predictions": [task_id],
                    "data": task["data"], "meta": {}, "created_at": "2026-12-03T14:52:26.954350Z",
                    "updated_at": "2026-12-03T14:52:34.768726Z", "allow_skip": True, "inner_id": task_id,
                    "total_annotations": sum(g is not None for g in mine),
                    "cancelled_annotations": sum(g is None for g in mine),
                    "total_predictions": len(task.get("predictions", [])), "comment_count": 0,
                    "unresolved_comment_count": 0, "last_comment_updated_at": None, "project": 1, "updated_by": 1,
                    "comment_authors": []})
    return out


def write_export(path: Path, export: Any) -> Path:
    path.write_text(json.dumps(export, indent=2), encoding="utf-8")
    return path


class FakeLabelStudio:
    """The part of label_studio_sdk.LabelStudio star calls, in memory: projects, task import, JSON export."""

    def __init__(self) -> None:
        self.projects_made: dict[int, SimpleNamespace] = {}
        self.tasks_of: dict[int, list[dict[str, Any]]] = {}
        self.given: dict[str, list[Given]] = {}
        self.kind = "textarea"
        self.projects = SimpleNamespace(create=self._create, get=self._get, import_tasks=self._import,
                                        exports=SimpleNamespace(download_sync=self._download))
        self.tasks = SimpleNamespace(list=self._list)

    def _create(self, *, title: str, label_config: str, **settings: Any) -> SimpleNamespace:
        pid = len(self.projects_made) + 1
        self.projects_made[pid] = SimpleNamespace(id=pid, title=title, label_config=label_config, settings=settings)
        self.tasks_of[pid] = []
        return self.projects_made[pid]

    def _get(self, *, id: int) -> SimpleNamespace:
        return self.projects_made[id]

    def _import(self, *, id: int, request: list[dict[str, Any]]) -> None:
        self.tasks_of[id].extend(json.loads(json.dumps(request)))

    def _list(self, *, project: int, fields: str, page_size: int) -> list[SimpleNamespace]:
        return [SimpleNamespace(data=t["data"]) for t in self.tasks_of[project]]

    def _download(self, project: int, *, export_type: str, download_all_tasks: bool) -> list[bytes]:
        assert export_type == "JSON" and download_all_tasks
        data = json.dumps(ls_export(self.tasks_of[project], self.given, self.kind)).encode()
        return [data[: len(data) // 2], data[len(data) // 2:]]  # the SDK yields chunks
