"""A round's query as a Label Studio import: a labeling config and tasks carrying star's ids and suggestions.

    round-<t>/labelstudio/labeling-config.xml   Choices for closed tasks (obqa letters, boolq true/false,
                                                jsonl choices), a TextArea for free answers (numbers, text)
    round-<t>/labelstudio/tasks.json            one task per item still without a label:
                                                data {question, star_id, star_round, star_score, suggestion,
                                                model_output}, and the model's suggestion as a prediction

The answer control is always named `answer` and points at the `question` text, so the export Label
Studio writes back (star.annotation.labelstudio_import) is read without the config. No SDK needed here.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from star.annotation.answers import answer_fix
from star.annotation.queries import OpenRound, open_round
from star.errors import RunStateError
from star.store.io import atomic_write
from star.tasks import Task

#: Names of the labeling config's answer control and of the text it labels.
ANSWER, QUESTION = "answer", "question"
CONFIG_FILE, TASKS_FILE = "labeling-config.xml", "tasks.json"


def labelstudio_dir(open_: OpenRound) -> Path:
    """round-<t>/labelstudio/ of the open round: exports, pushed project, pulled annotations."""
    return open_.run.round_dir(open_.index) / "labelstudio"


def is_closed(task: Task) -> bool:
    """True when answers come from a fixed set (Choices); False for free answers (TextArea)."""
    return bool(task.choices)


def labeling_config(task: Task) -> str:
    """The Label Studio labeling config (XML) for `task`'s answers."""
    view = ET.Element("View")
    ET.SubElement(view, "Header", value="$star_id", size="6")  # a Header is static text or one $field
    ET.SubElement(view, "Text", name=QUESTION, value="$" + QUESTION)
    fix = answer_fix(task)
    ET.SubElement(view, "Header", value=fix[:1].upper() + fix[1:], size="5")
    if is_closed(task):
        choices = ET.SubElement(view, "Choices", name=ANSWER, toName=QUESTION, choice="single-radio",
                                showInline="true", required="true")
        for choice in task.choices or ():
            ET.SubElement(choices, "Choice", value=choice)
    else:
        ET.SubElement(view, "TextArea", name=ANSWER, toName=QUESTION, maxSubmissions="1", editable="true",
                      required="true", rows="2", placeholder="the answer")
    ET.SubElement(view, "Header", value="Model output", size="6")
    ET.SubElement(view, "Text", name="model_output", value="$model_output")
    ET.indent(view)
    return ET.tostring(view, encoding="unicode") + "\n"


def answer_result(task: Task, answer: str) -> list[dict[str, Any]]:
    """A Label Studio `result` giving `answer` through the config's answer control."""
    kind, value = ("choices", {"choices": [answer]}) if is_closed(task) else ("textarea", {"text": [answer]})
    return [{"from_name": ANSWER, "to_name": QUESTION, "type": kind, "value": value}]


def _prediction(task: Task, row: dict[str, Any]) -> list[dict[str, Any]]:
    """The model's suggestion as a Label Studio prediction (none when it has no usable answer)."""
    suggestion = row.get("suggestion")
    if not isinstance(suggestion, str) or not suggestion.strip():
        return []
    if is_closed(task) and suggestion not in (task.choices or ()):
        return []
    return [{"model_version": f"star round {row['round']}", "result": answer_result(task, suggestion)}]


def task_of(task: Task, row: dict[str, Any]) -> dict[str, Any]:
    """One query item as a Label Studio task (data + prediction)."""
    data = {QUESTION: row["question"], "star_id": row["id"], "star_round": row["round"], "star_score": row.get("score"),
            "suggestion": row.get("suggestion") or "", "model_output": row.get("raw_output") or ""}
    return {"data": data, "predictions": _prediction(task, row)}


def labelstudio_tasks(open_: OpenRound) -> list[dict[str, Any]]:
    """The open round's items still without a label, as Label Studio tasks."""
    return [task_of(open_.task, row) for row in open_.remaining()]


@dataclass(frozen=True)
class Export:
    """What `export_labelstudio` wrote."""

    config_path: Path
    tasks_path: Path
    count: int
    round_index: int


def export_labelstudio(run_dir: str | Path, out_dir: str | Path | None = None) -> Export:
    """Write the labeling config and the tasks of the open round's unlabelled items (default: round-<t>/labelstudio/)."""
    open_ = open_round(run_dir)
    tasks = labelstudio_tasks(open_)
    if not tasks:
        raise RunStateError(f"round {open_.index} of {open_.run.path} has every item labelled: nothing to export",
                            hint=f"train on them with `star run --resume {open_.run.path}`")
    out = Path(out_dir) if out_dir is not None else labelstudio_dir(open_)
    config_path, tasks_path = out / CONFIG_FILE, out / TASKS_FILE
    atomic_write(config_path, labeling_config(open_.task))
    atomic_write(tasks_path, json.dumps(tasks, ensure_ascii=False, indent=1) + "\n")
    return Export(config_path, tasks_path, len(tasks), open_.index)
