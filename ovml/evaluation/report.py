"""Evaluation outputs: metrics.json, report.md (laid out like the paper's Table I) and PNG plots."""
from __future__ import annotations

import os

import numpy as np

from ..config import EvalConfig
from ..files import write_json
from .evaluate import Evaluation, ScoredRow, evaluate_cache
from .paper import report_rows

SETTING = {"unseen": "ZSL (unseen labels)", "all": "GZSL (all labels)", "seen": "seen labels"}


def row_label(row: ScoredRow) -> str:
    if row.alpha is None:
        return row.method
    return f"{row.method} ({os.path.basename(row.run.rstrip('/'))}) alpha={row.alpha:g}"


def table(summary: dict) -> list[str]:
    """Markdown table: one row per method and alpha; P, R, F1 at each K, then mAP."""
    ks = summary["ks"]
    columns = [f"{m}@{k}" for k in ks for m in ("P", "R", "F1")] + ["mAP"]
    lines = ["| method | alpha | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for row in summary["rows"]:
        alpha = "" if row["alpha"] is None else f"{row['alpha']:g}"
        name = row["method"] + (f" ({os.path.basename(row['run'].rstrip('/'))})" if row.get("run") else "")
        lines.append(f"| {name} | {alpha} | " + " | ".join(f"{row[c]:.1f}" for c in columns) + " |")
    for name, figures in report_rows(summary.get("dataset"), summary["split"]):
        lines.append(f"| {name} | | " + " | ".join(f"{figures[c]:.1f}" if c in figures else "" for c in columns) + " |")
    return lines


def markdown(summary: dict, plots: list[str]) -> str:
    lines = [f"# ovml evaluation: {SETTING[summary['split']]}", "",
             f"Cache `{summary['cache']}` (dataset {summary.get('dataset')}), split `{summary['image_split']}`: "
             f"{summary['images']} images x {summary['labels']} labels. Protocol: {summary['protocol']} "
             "(per-label AP with unannotated entries masked, labels without positives count 0; micro "
             "P/R/F1 over every image's top-K). Values in percent.", ""] + table(summary)
    if report_rows(summary.get("dataset"), summary["split"]):
        lines += ["", "Rows marked (paper) are the published figures of Dao et al., for comparison."]
    if summary["notes"]:
        lines += ["", "Alpha choice:"] + [f"- {note}" for note in summary["notes"]]
    lines += [""] + [f"![{name}]({name})" for name in plots]
    return "\n".join(lines) + "\n"


def plot_alpha_sweep(evaluation: Evaluation, path: str) -> bool:
    import matplotlib.pyplot as plt
    k = evaluation.summary["ks"][0]
    heads = {}
    for row in evaluation.rows:
        if row.alpha is not None:
            heads.setdefault(row.run, []).append(row)
    if not heads:
        return False
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for metric, axis in zip(("mAP", f"F1@{k}"), axes):
        for run, rows in heads.items():
            rows = sorted(rows, key=lambda r: r.alpha)
            axis.plot([r.alpha for r in rows], [r.metrics[metric] for r in rows], "o-",
                      label=f"{rows[0].method} ({os.path.basename(run.rstrip('/'))})")
        for row in evaluation.rows:
            if row.alpha is None:
                axis.axhline(row.metrics[metric], linestyle="--", color="grey" if row.method == "dense" else "black",
                             label=row.method)
        axis.set_xlabel("alpha (0: head alone, 1: CLIP's global feature)")
        axis.set_ylabel(f"{metric} (%)")
        axis.legend(fontsize=8)
    figure.suptitle(f"Interpolation sweep, {SETTING[evaluation.summary['split']]}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def best_head_row(evaluation: Evaluation) -> ScoredRow | None:
    heads = [row for row in evaluation.rows if row.alpha is not None]
    return max(heads, key=lambda r: r.metrics["mAP"]) if heads else None


def plot_per_label_ap(evaluation: Evaluation, path: str, shown: int = 15) -> bool:
    import matplotlib.pyplot as plt
    head = best_head_row(evaluation)
    clip = next((row for row in evaluation.rows if row.method == "clip-ml"), None)
    if head is None or clip is None:
        return False
    gain = 100 * (head.per_label_ap - clip.per_label_ap)
    order = np.argsort(gain)
    picked = order if len(order) <= 2 * shown else np.concatenate([order[:shown], order[-shown:]])
    names = evaluation.summary["label_names"]
    figure, axis = plt.subplots(figsize=(8, max(3, 0.25 * len(picked))))
    axis.barh(range(len(picked)), gain[picked], color=["tab:red" if g < 0 else "tab:green" for g in gain[picked]])
    axis.set_yticks(range(len(picked)), [names[i] for i in picked], fontsize=7)
    axis.set_xlabel(f"AP of {row_label(head)} minus AP of CLIP-ML (points)")
    axis.set_title(f"Per-label AP change ({len(gain)} labels; {int((gain > 0).sum())} gain, "
                   f"{int((gain < 0).sum())} lose)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def precision_recall(values: np.ndarray, truth: np.ndarray) -> tuple:
    """Micro precision-recall over annotated entries: a row's `pr_sample` (scores, positive flags)."""
    order = np.argsort(-values, kind="stable")
    hits = np.cumsum(truth[order])
    return hits / max(truth.sum(), 1), hits / np.arange(1, len(order) + 1)


def plot_pr_curves(evaluation: Evaluation, path: str) -> bool:
    import matplotlib.pyplot as plt
    rows = [row for row in evaluation.rows if row.alpha is None]
    head = best_head_row(evaluation)
    rows += [head] if head else []
    if not rows or not evaluation.positives:
        return False
    figure, axis = plt.subplots(figsize=(5, 4))
    for row in rows:
        recall, precision = precision_recall(*row.pr_sample)
        axis.plot(recall, precision, label=row_label(row))
    axis.set_xlabel("recall")
    axis.set_ylabel("precision")
    axis.set_title("Precision-recall over all annotated (image, label) pairs")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def write_report(evaluation: Evaluation, out: str) -> list[str]:
    """Write metrics.json, the PNG plots and report.md into `out`; returns the files written."""
    import matplotlib
    matplotlib.use("Agg")
    os.makedirs(out, exist_ok=True)
    written = [os.path.join(out, "metrics.json")]
    write_json(written[0], evaluation.summary, indent=2)
    plots = []
    for name, draw in (("alpha_sweep.png", plot_alpha_sweep), ("per_label_ap.png", plot_per_label_ap),
                       ("pr_curves.png", plot_pr_curves)):
        if draw(evaluation, os.path.join(out, name)):
            plots.append(name)
    with open(os.path.join(out, "report.md"), "w", encoding="utf-8") as handle:
        handle.write(markdown(evaluation.summary, plots))
    return written + [os.path.join(out, name) for name in plots] + [os.path.join(out, "report.md")]


def evaluate_and_report(config: EvalConfig) -> tuple[Evaluation, list[str]]:
    """Evaluate as `config` says and, where `config.out` names a folder, write the report there;
    returns the evaluation and the files written (what `ovml eval` and `ovml.evaluate` share)."""
    evaluation = evaluate_cache(config)
    return evaluation, write_report(evaluation, config.out) if config.out else []
