"""`polylm plot RUN_DIR`: loss per language and the realized language mix over steps, as PNG files."""

from __future__ import annotations

import itertools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # after use(): the backend is chosen first

from polylm.durable import read_jsonl
from polylm.errors import PolyLMError


def plot_run(run_dir: Path) -> list[Path]:
    """Write RUN_DIR/plots/{loss_by_language,language_mix}.png and return their paths."""
    metrics = read_jsonl(run_dir / "metrics.jsonl").records
    if not metrics:
        raise PolyLMError(f"{run_dir / 'metrics.jsonl'}: no training steps to plot")
    validation = read_jsonl(run_dir / "validation.jsonl").records
    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    steps = [r["step"] for r in metrics]
    languages = sorted({lang for r in metrics for lang in r["loss_by_lang"]})
    switches = [r["step"] for previous, r in itertools.pairwise(metrics) if r["stage"] != previous["stage"]]

    figure, (train_axis, valid_axis) = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for axis in (train_axis, valid_axis):
        axis.set_prop_cycle(color=plt.cm.tab20.colors)  # 18 languages need 18 distinct colours
    for lang in languages:
        points = [(r["step"], r["loss_by_lang"][lang]) for r in metrics if lang in r["loss_by_lang"]]
        train_axis.plot(*zip(*points, strict=True), label=lang, linewidth=1)
        held = [(r["step"], r["loss_by_lang"][lang]) for r in validation if lang in r["loss_by_lang"]]
        if held:
            valid_axis.plot(*zip(*held, strict=True), marker="o", label=lang, linewidth=1)
    for axis, title in ((train_axis, "training loss per language"), (valid_axis, "validation loss per language")):
        for switch in switches:
            axis.axvline(switch, color="grey", linestyle="--", linewidth=1)
        axis.set_title(title)
        axis.set_xlabel("optimizer step")
    train_axis.set_ylabel("cross-entropy (nats/token)")
    valid_axis.legend(ncol=2, fontsize="small")
    figure.tight_layout()
    loss_path = out / "loss_by_language.png"
    figure.savefig(loss_path, dpi=100)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(10, 5))
    axis.set_prop_cycle(color=plt.cm.tab20.colors)
    shares = [[r["lang_mix"].get(lang, 0.0) for r in metrics] for lang in languages]
    axis.stackplot(steps, shares, labels=languages)
    non_english = [1 - r["lang_mix"].get("en", 0.0) for r in metrics]
    axis.plot(steps, non_english, color="black", linewidth=1.5, label="non-English share")
    for switch in switches:
        axis.axvline(switch, color="white", linestyle="--", linewidth=2)
        axis.annotate("stage switch", (switch, 1.0), xytext=(4, -12), textcoords="offset points", color="white")
    axis.set_ylim(0, 1)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("share of tokens")
    axis.set_title("realized language mix per step")
    axis.legend(ncol=4, fontsize="small", loc="lower left")
    figure.tight_layout()
    mix_path = out / "language_mix.png"
    figure.savefig(mix_path, dpi=100)
    plt.close(figure)
    return [loss_path, mix_path]
