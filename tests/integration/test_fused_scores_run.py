"""A tiny run scored from the generation pass selects what the teacher-forced second forward selects.

The fused PE/ME are the teacher-forced ones up to fp32 rounding (~1e-7 relative: the KV-cached
decode and the full forward add the same terms in a different order), so a selection could only
differ where two candidates' mixed scores are that close; the tiny run's are not, and its
selections, labels and metrics are the same.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from star import loop
from star.engine import scoring
from star.store.io import read_jsonl
from star.store.runs import RunDir


def _scores(cfg: dict, folder: Path, fused: bool) -> tuple[list[list[dict]], list[dict]]:
    cfg = copy.deepcopy(cfg)
    cfg["output_dir"] = str(folder)
    cfg["al"].update(score_from_generation=fused, mc_dropout=False)  # base and tuned model: one deterministic pass each
    cfg["al"]["precision"] = "fp32"  # the fp32 rounding bound above (auto is bf16 where the CPU has it)
    cfg["train"]["max_prompt_tokens"] = 512  # whole prompts (byte tokens): at 96 only the shared instructions are left
    loop.run(cfg, show_progress=False)
    run = RunDir(folder)
    return [read_jsonl(run.scores_path(t)) for t in run.finished_rounds()], run.metrics()


def test_selections_of_a_tiny_run_are_unchanged(tiny_run_config: dict, tmp_path: Path, monkeypatch) -> None:
    forced_calls = []
    score_pairs = scoring.score_pairs
    counted = lambda *a, **k: forced_calls.append(1) or score_pairs(*a, **k)
    monkeypatch.setattr(loop.scoring, "score_pairs", counted)
    monkeypatch.setattr(scoring, "score_pairs", counted)  # greedy_uncertainty's fallback
    fused, fused_metrics = _scores(tiny_run_config, tmp_path / "fused", True)
    assert not forced_calls  # no second forward in the fused run
    forced, forced_metrics = _scores(tiny_run_config, tmp_path / "forced", False)
    assert forced_calls
    assert len(fused) == len(forced) == tiny_run_config["al"]["rounds"]
    for a, b in zip(fused, forced):
        assert [(r["id"], r["selected"]) for r in a] == [(r["id"], r["selected"]) for r in b]
        for key in ("u_base", "u_full"):
            if a[0][key] is not None:
                np.testing.assert_allclose([r[key] for r in a], [r[key] for r in b], rtol=1e-6)
    assert fused[1][0]["u_base"] is not None and fused[1][0]["u_full"] is not None
    assert len({r["u_base"] for r in fused[1]}) > 1  # the scores vary: the comparison has something to rank
    strip = [{k: v for k, v in m.items() if k != "seconds"} for m in fused_metrics]
    assert strip == [{k: v for k, v in m.items() if k != "seconds"} for m in forced_metrics]
