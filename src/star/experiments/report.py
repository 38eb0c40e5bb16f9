"""A comparison report of run directories: report.{md,html,json} and PNG figures in one folder.

`write_report` is the entry point (`star report`, and `star compare` after its grid); the numbers
are defined in `star.experiments.statistics`, the bootstrap intervals in `star.experiments.intervals`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from star.errors import ConfigError
from star.experiments.document import document
from star.experiments.figures import write_figures
from star.experiments.records import RunRecord
from star.experiments.render import render_html, render_markdown
from star.experiments.stored import gather_runs
from star.experiments.summary import summarise
from star.store.io import write_json


def write_report(runs: Sequence[str | os.PathLike[str] | RunRecord], out_dir: str | os.PathLike[str],
                 paired_with: str | None = None) -> Path:
    """Write report.{md,html,json} and the PNG figures into `out_dir`; returns that folder."""
    paths = [r for r in runs if not isinstance(r, RunRecord)]
    records = [r for r in runs if isinstance(r, RunRecord)] + (gather_runs(paths) if paths else [])
    if not records:
        raise ConfigError("no runs to report", hint="pass run directories or a `star compare` output folder")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"report folder {out} exists and is not a directory", hint="choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(records, paired_with)
    blocks = document(summary)
    write_json(out / "report.json", summary)
    (out / "report.md").write_text(render_markdown(blocks), encoding="utf-8")
    (out / "report.html").write_text(render_html(blocks), encoding="utf-8")
    write_figures(summary, out)
    return out
