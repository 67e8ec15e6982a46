"""The OVML paper's published figures (Dao et al., CLIP RN50), per table, dataset, method and task.

Table I compares CLIP-ML and OVML (NUS-WIDE 925/81 at K = 3, 5; Open Images 7186/400 at K = 10,
20); Table II re-runs earlier methods on the same CLIP features; Table III is the NUS-WIDE ZSL
ablation. Values in percent; a figure the paper does not give is simply absent.
"""
from __future__ import annotations

CLIP_ML_NUS_ZSL = {"F1@3": 35.7, "F1@5": 34.1, "mAP": 36.4}
OVML_NUS_ZSL = {"F1@3": 40.1, "F1@5": 37.5, "mAP": 42.6}
OVML_NUS_GZSL = {"F1@3": 18.3, "F1@5": 22.0, "mAP": 14.3}
OVML_OI_ZSL = {"F1@10": 16.9, "F1@20": 10.6, "mAP": 68.4}

PAPER_TABLES: dict[int, dict[str, dict[tuple[str, str], dict[str, float]]]] = {
    1: {"nuswide": {("CLIP-ML", "ZSL"): CLIP_ML_NUS_ZSL, ("OVML", "ZSL"): OVML_NUS_ZSL,
                    ("OVML", "GZSL"): OVML_NUS_GZSL},
        "openimages": {("OVML", "ZSL"): OVML_OI_ZSL}},
    2: {"nuswide": {("CLIP-ZSSDL", "ZSL"): {"F1@3": 36.8, "F1@5": 35.5, "mAP": 34.6},
                    ("CLIP-ZSSDL", "GZSL"): {"F1@3": 19.2, "F1@5": 23.2, "mAP": 11.2},
                    ("CLIP-BiAM", "ZSL"): {"F1@3": 34.4, "F1@5": 32.8, "mAP": 29.5},
                    ("CLIP-BiAM", "GZSL"): {"F1@3": 15.5, "F1@5": 19.0, "mAP": 10.5},
                    ("OVML", "ZSL"): OVML_NUS_ZSL, ("OVML", "GZSL"): OVML_NUS_GZSL}},
    3: {"nuswide": {("CLIP-ML", "ZSL"): CLIP_ML_NUS_ZSL,
                    ("CLIP-ML, fine-tuned", "ZSL"): {"F1@3": 29.3, "F1@5": 29.1, "mAP": 41.6},
                    ("Attention without L_con", "ZSL"): {"F1@3": 36.9, "F1@5": 34.8, "mAP": 36.3},
                    ("Attention with L_con", "ZSL"): OVML_NUS_ZSL}},
}


def paper_figures(table: int, dataset: str | None, method: str, task: str) -> dict[str, float] | None:
    """The paper's figures for one row of one table on one dataset, or None where it gives none."""
    return PAPER_TABLES.get(table, {}).get(dataset or "", {}).get((method, task))


# The rows `eval`'s report.md sets beside its own: (table, method) per task, as labelled there.
REPORT_ROWS = {"ZSL": [(1, "CLIP-ML", "CLIP-ML (paper)"),
                       (3, "Attention without L_con", "OVML without contrastive (paper)"),
                       (1, "OVML", "OVML (paper)")],
               "GZSL": [(1, "OVML", "OVML (paper)")]}
TASK_OF_SPLIT = {"unseen": "ZSL", "all": "GZSL"}


def report_rows(dataset: str | None, split: str) -> list[tuple[str, dict[str, float]]]:
    """The paper's published rows for an evaluation of `split` on `dataset`, labelled for report.md."""
    task = TASK_OF_SPLIT.get(split)
    rows = [(label, paper_figures(table, dataset, method, task)) for table, method, label in REPORT_ROWS.get(task, [])]
    return [(label, figures) for label, figures in rows if figures is not None]
