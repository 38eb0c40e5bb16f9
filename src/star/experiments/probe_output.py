"""`star probe`'s probe.md (tables) and PNG figures, from the record in probe.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from star.plots import new_figure
from star.store.io import atomic_write

AUROC_FIGURE, ECE_FIGURE, STRENGTH_FIGURE = "auroc_vs_labels.png", "ece_vs_labels.png", "ece_vs_strength.png"
SCORES = (("u_base", "u_base (adapter off)"), ("u_full", "u_full (deterministic)"),
          ("u_full_mc", "u_full (K MC passes)"))


def _fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _auroc(size: dict[str, Any], score: str, measure: str) -> float | None:
    cell = size["gap"]["auroc"].get(score)
    return None if cell is None else cell[measure]


def _variant_names(record: dict[str, Any]) -> list[str]:
    return [row["variant"] for row in record["sizes"][0]["calibration"]] if record["sizes"] else []


def _by_variant(record: dict[str, Any], key: str) -> dict[str, list[float | None]]:
    """{variant: [value of `key` at each size]}, sizes in order."""
    out: dict[str, list[float | None]] = {name: [] for name in _variant_names(record)}
    for size in record["sizes"]:
        for row in size["calibration"]:
            out.setdefault(row["variant"], []).append(row[key])
    return out


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def markdown(record: dict[str, Any]) -> str:
    """probe.md: the settings, the AUROC table, ECE and accuracy per variant and size, B's norm, the figures."""
    cfg, sizes = record["config"], record["sizes"]
    p = cfg["al"]["mc_dropout_p"] if cfg["al"]["mc_dropout_p"] is not None else cfg["lora"]["dropout"]
    labels = [str(s["labels"]) for s in sizes]
    lines = ["# star probe: uncertainty gap and calibration", "",
             f"Task `{cfg['task']['name']}`, model `{cfg['model']['name']}`, seed {cfg['seed']}. Probe set: "
             f"{record['probe_size']} pool examples in no labelled set; test set: {len(record['test_ids'])} examples. "
             f"MC dropout: K = {cfg['al']['mc_passes']} passes at p = {p:g}. "
             "One seed: no spread over seeds is measured. "
             f"Time: {sum(s['seconds'] for s in sizes):.0f} s over {len(sizes)} size(s).", "",
             "## Uncertainty gap", "",
             "AUROC of each score at ranking the tuned model's wrong probe-set answers above its right ones "
             "(0.5 = chance; - = undefined: every answer right or every answer wrong). u_base scores the base "
             "model's own answers; u_full the tuned model's. Labels 0 = the base model.", ""]
    head = ["labels", "probe accuracy"] + [f"{name} {m.upper()}" for name, _ in SCORES for m in ("pe", "me")]
    lines += _table(head, [[str(s["labels"]), _fmt(s["gap"]["accuracy"])]
                           + [_fmt(_auroc(s, name, m)) for name, _ in SCORES for m in ("pe", "me")] for s in sizes])
    for key, title in (("ece", "Calibration: test-set ECE"), ("accuracy", "Test-set accuracy")):
        lines += ["", f"## {title}", ""]
        lines += _table(["variant"] + [f"labels {x}" for x in labels],
                        [[f"`{v}`"] + [_fmt(x) for x in xs] for v, xs in _by_variant(record, key).items()])
    lines += ["", "`off`: no B decay, no B penalty, deterministic confidence. `config`: the config's "
              "train.weight_decay_b and train.b_penalty. `train.*=X`: that term alone at X (retrained). "
              "`al.mc_dropout_p=X`: the `off` adapter's answers, each confidence averaged over K LoRA-dropout passes "
              "at p = X.", "", "## Training", "",
              "Frobenius norm of B (all layers) after training, and seconds, per training setting"
              " (labels 0: no training):", ""]
    trainings = list(dict.fromkeys(k for s in sizes for k in s["training"]))
    lines += _table(["training"] + [f"labels {x}" for x in labels],
                    [[f"`{k}`"] + [f"{s['training'][k]['b_norm']:.3f} ({s['training'][k]['seconds']:.0f} s)"
                                   if k in s["training"] else "-" for s in sizes] for k in trainings])
    lines += ["", "## Figures", "", f"![AUROC vs labels]({AUROC_FIGURE})", "", f"![ECE vs labels]({ECE_FIGURE})"]
    if record["strengths"]:
        lines += ["", f"![ECE vs strength]({STRENGTH_FIGURE})"]
    return "\n".join(lines) + "\n"


def plot_auroc(record: dict[str, Any], path: Path) -> None:
    """AUROC vs labels: PE and ME panels, one line per score (u_base, u_full, u_full with MC)."""
    fig = new_figure(10.0, 4.2)
    x = [s["labels"] for s in record["sizes"]]
    for ax, measure in zip(fig.subplots(1, 2), ("pe", "me")):
        for (name, label), style in zip(SCORES, ("-o", "--s", ":^")):  # u_full's two often overlap: dashed, dotted
            y = [_auroc(s, name, measure) for s in record["sizes"]]
            ax.plot(x, [float("nan") if v is None else v for v in y], style, label=label)
        ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("labels")
        ax.set_ylabel("AUROC (wrong above right)")
        ax.set_title(measure.upper())
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_ece_labels(record: dict[str, Any], path: Path) -> None:
    """Test-set ECE vs labels, one line per variant."""
    fig = new_figure()
    ax = fig.subplots()
    x = [s["labels"] for s in record["sizes"]]
    for name, ys in _by_variant(record, "ece").items():
        ax.plot(x, ys, marker="o", label=name)
    ax.set_xlabel("labels")
    ax.set_ylabel("ECE")
    ax.set_title("test-set ECE vs labels")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_ece_strength(record: dict[str, Any], path: Path) -> None:
    """Test-set ECE vs the strength of each swept term (0 = 'off'), one panel per term, one line per size."""
    terms = list(record["strengths"])
    fig = new_figure(4.5 * len(terms), 4.0)
    for ax, term in zip(fig.subplots(1, len(terms), squeeze=False)[0], terms):
        for s in record["sizes"]:
            rows = {r["variant"]: r for r in s["calibration"]}
            points = [(0.0, rows["off"]["ece"])]
            points += [(r["strength"], r["ece"]) for r in s["calibration"] if r["term"] == term]
            ax.plot(*zip(*sorted(points)), marker="o", label=f"{s['labels']} labels")
        ax.set_xlabel(f"{term} (0 = off)")
        ax.set_ylabel("ECE")
        ax.set_title(term)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_outputs(record: dict[str, Any], out: Path) -> None:
    """probe.md and the figures into `out` (probe.json is written as the probe goes)."""
    atomic_write(out / "probe.md", markdown(record))
    if not record["sizes"]:
        return
    plot_auroc(record, out / AUROC_FIGURE)
    plot_ece_labels(record, out / ECE_FIGURE)
    if record["strengths"]:
        plot_ece_strength(record, out / STRENGTH_FIGURE)
