"""`ovml reproduce`: one of the paper's tables, every row the given caches allow, trained and scored
with the library's own `train_head` and `evaluate_cache`.

Table 1: CLIP-ML and OVML, ZSL and GZSL. Table 2: CLIP-ZSSDL, CLIP-BiAM and OVML, ZSL and GZSL.
Table 3 (ZSL): CLIP-ML, CLIP-ML on the fine-tuned CLIP's cache (`--finetuned-cache`), the
attention head without and with L_con. The attention head's rows train with the paper's settings
(`train-head --paper`: learning rate 2e-4, logit scale 100, random F_q, CLIP's heads), or with
ovml's adaptive defaults under `--settings defaults`; the earlier methods' heads train with the
library's defaults (learning rate from the range test, learnt logit scale) and their own losses,
as the paper's Table II re-runs every method on the same CLIP features. OVML's rows
interpolate with CLIP's global feature at `--alpha auto` (chosen on the run's validation images,
never on test labels), the earlier methods' rows score their heads alone (alpha 0).

DIR holds `table.json` (exactly the layout docs/architecture.md gives), `table.md` (ours beside the paper's),
`rows/<row>.json` (each finished row with how it was made) and `runs/<head>/` (the trained heads,
shared by a head's ZSL and GZSL rows). Finished rows are kept: a rerun resumes where it stopped,
and an interrupted training resumes from its last epoch.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Callable

from ..cache.reader import CacheReader
from ..config import PAPER_SETTINGS, EvalConfig, ReproduceConfig, TrainConfig
from ..errors import UsageError
from ..evaluation.evaluate import default_ks, evaluate_cache
from ..evaluation.paper import paper_figures
from ..files import write_json, write_text
from ..lock import folder_lock
from ..train.trainer import train_head

TASKS = {"ZSL": "unseen", "GZSL": "all"}


@dataclass(frozen=True)
class RowSpec:
    """One row of a table: what it trains (None: CLIP-ML, nothing) and how it is scored."""

    method: str                            # the paper's name for the row
    task: str                              # ZSL or GZSL
    run: str | None = None                 # run folder under DIR/runs (None: CLIP-ML)
    training: dict = field(default_factory=dict)  # TrainConfig options of that run
    alpha_auto: bool = False               # interpolate at alpha auto (OVML) or score the head alone
    cache: str = "main"                    # main, or finetuned (--finetuned-cache)

    @property
    def slug(self) -> str:
        return f"{self.method}-{self.task}".lower().replace(",", "").replace(" ", "-")


def both(method: str, **spec) -> list[RowSpec]:
    return [RowSpec(method, task, **spec) for task in TASKS]


OVML = dict(run="ovml", training={"head": "ovml"}, alpha_auto=True)
TABLES: dict[int, list[RowSpec]] = {
    1: both("CLIP-ML") + both("OVML", **OVML),
    2: both("CLIP-ZSSDL", run="zssdl", training={"head": "zssdl"})
    + both("CLIP-BiAM", run="biam", training={"head": "biam"}) + both("OVML", **OVML),
    3: [RowSpec("CLIP-ML", "ZSL"), RowSpec("CLIP-ML, fine-tuned", "ZSL", cache="finetuned"),
        RowSpec("Attention without L_con", "ZSL", run="ovml-no-contrastive",
                training={"head": "ovml", "contrastive_weight": 0.0}, alpha_auto=True),
        RowSpec("Attention with L_con", "ZSL", **OVML)],
}


@dataclass
class CacheFacts:
    """What decides which rows a cache allows."""

    path: str
    fingerprint: str
    dataset: str | None
    ids: list[str]
    has_unseen: bool
    splits: list[str]


def cache_facts(path: str) -> CacheFacts:
    with CacheReader(path) as reader:
        return CacheFacts(os.path.abspath(path), reader.fingerprint(), reader.dataset.get("name"), list(reader.ids),
                          bool((~reader.seen).any()), list(reader.splits))


def why_not(spec: RowSpec, caches: dict[str, CacheFacts | None]) -> str | None:
    """Why a row cannot be run with these caches (None: it can)."""
    facts = caches.get(spec.cache)
    if facts is None:
        return "needs --finetuned-cache (extract with the weights `ovml finetune` writes)"
    if spec.cache == "finetuned" and facts.ids != caches["main"].ids:
        return f"{facts.path} has another vocabulary than {caches['main'].path}"
    if "test" not in facts.splits:
        return f"{facts.path} has no test split"
    if spec.task == "ZSL" and not facts.has_unseen:
        return f"{facts.path} has no unseen labels"
    if spec.run is not None and "train" not in facts.splits:
        return f"{facts.path} has no train split to train the head on"
    return None


class Reproduction:
    """One table in one folder: settings, finished rows, the two output files."""

    def __init__(self, config: ReproduceConfig):
        if config.table not in TABLES:
            raise UsageError(f"--table must be one of {', '.join(map(str, TABLES))}, not {config.table}")
        self.config = config
        self.caches = {"main": cache_facts(config.cache),
                       "finetuned": cache_facts(config.finetuned_cache) if config.finetuned_cache else None}
        self.dataset = self.caches["main"].dataset
        self.ks = default_ks(len(self.caches["main"].ids))
        if config.settings not in ("paper", "defaults"):
            raise UsageError(f"--settings must be paper or defaults, not {config.settings!r}")
        self.settings = {"table": config.table, "epochs": config.epochs, "settings": config.settings,
                         **{f"{name}_cache": None if facts is None else {"path": facts.path,
                                                                           "fingerprint": facts.fingerprint}
                            for name, facts in self.caches.items()}}

    def path(self, *parts: str) -> str:
        return os.path.join(self.config.out, *parts)

    def claim_folder(self) -> None:
        """Record the settings, or check that the folder's earlier rows were made with the same."""
        os.makedirs(self.path("rows"), exist_ok=True)
        recorded, settings = self.path("reproduce.json"), dict(self.settings)
        if os.path.exists(recorded):
            with open(recorded, encoding="utf-8") as handle:
                before = json.load(handle)
            changed = [key for key in settings if before.get(key) != settings[key]
                       and not (key == "finetuned_cache" and None in (before.get(key), settings[key]))]
            if changed:
                raise UsageError(f"{self.config.out}: holds rows made with other settings "
                                 f"({', '.join(changed)}); use another --out")
            settings["finetuned_cache"] = settings["finetuned_cache"] or before.get("finetuned_cache")
        write_json(recorded, settings)

    def finished(self, spec: RowSpec) -> dict | None:
        path = self.path("rows", spec.slug + ".json")
        if not os.path.exists(path):
            return None
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)

    def paper_settings(self, spec: RowSpec) -> bool:
        """Whether the row's head trains with the paper's settings (the attention head's rows under
        `--settings paper`) rather than the library's defaults."""
        return spec.training.get("head") == "ovml" and self.config.settings == "paper"

    def training_sentence(self, rows: list[dict]) -> str:
        """table.md's account of how the heads behind `rows` were trained ("" when none was)."""
        epochs = self.config.epochs
        trained = "Every head trained" + (f" for {epochs} epoch{'s' if epochs != 1 else ''}" if epochs else "")
        specs = {spec.method: spec for spec in TABLES[self.config.table] if spec.run}
        shown = list(dict.fromkeys(row["method"] for row in rows if row["method"] in specs))
        if not shown:
            return ""
        paper = [method for method in shown if self.paper_settings(specs[method])]
        if not paper:
            return f"{trained} with the library's defaults."
        others = [method for method in shown if method not in paper]
        return (f"{trained}: {' and '.join(paper)} with the paper's settings (`train-head --paper`)"
                + (f", {' and '.join(others)} with the library's defaults" if others else "") + ".")

    def train(self, spec: RowSpec) -> str:
        """Train (or resume, or find finished) the row's head; returns its run folder."""
        out = self.path("runs", spec.run)
        options = {} if self.config.epochs is None else {"epochs": self.config.epochs}
        if self.paper_settings(spec):
            options |= PAPER_SETTINGS
        train_head(TrainConfig(cache=self.config.cache, out=out, device=self.config.device, lock=self.config.lock,
                               progress=self.config.progress, **options, **spec.training), resume=True)
        return out

    def score(self, spec: RowSpec) -> dict:
        """Train if needed, evaluate, and keep the row in rows/."""
        cache = self.caches[spec.cache].path
        run = self.train(spec) if spec.run else None
        evaluation = evaluate_cache(EvalConfig(
            cache=cache, heads=(run,) if run else (), split=TASKS[spec.task], alphas=() if spec.alpha_auto else (0.0,),
            alpha_auto=spec.alpha_auto, baselines=() if run else ("clip-ml",), ks=self.ks,
            device=self.config.device, progress=self.config.progress))
        scored = evaluation.summary["rows"][0]
        row = {"method": spec.method, "task": spec.task, **{f"F1@{k}": scored[f"F1@{k}"] for k in self.ks},
               "mAP": scored["mAP"], "paper": paper_figures(self.config.table, self.dataset, spec.method, spec.task),
               "made": {"alpha": scored["alpha"], "run": run, "cache": cache, "images": evaluation.summary["images"],
                        "labels": evaluation.summary["labels"], "notes": evaluation.summary["notes"]}}
        write_json(self.path("rows", spec.slug + ".json"), row)
        return row


def table_json(table: int, dataset: str | None, rows: list[dict]) -> dict:
    """table.json in the layout docs/architecture.md gives, nothing else in a row."""
    public = [{key: value for key, value in row.items() if key != "made"} for row in rows]
    return {"table": table, "dataset": dataset, "rows": public}


def table_markdown(reproduction: Reproduction, rows: list[dict], skipped: list[tuple[RowSpec, str]]) -> str:
    """table.md: our figures beside the paper's, how each row was made, what was not run."""
    metrics = [f"F1@{k}" for k in reproduction.ks] + ["mAP"]
    cell = lambda values, key: "" if not values or key not in values else f"{values[key]:.1f}"
    trained = reproduction.training_sentence(rows)
    lines = [f"# Table {reproduction.config.table}: ours beside the paper's", "",
             f"Dataset {reproduction.dataset}, cache `{reproduction.caches['main'].path}`"
             + (f", fine-tuned cache `{reproduction.caches['finetuned'].path}`" if reproduction.caches["finetuned"]
                else "") + ". Protocol: LESA's (per-label AP with unannotated entries masked, micro F1 over "
             "every image's top K), values in percent." + (f" {trained}" if trained else ""), "",
             "| method | task | " + " | ".join(metrics) + " | " + " | ".join(f"paper {m}" for m in metrics)
             + " | alpha |", "|---|---|" + "---|" * (2 * len(metrics) + 1)]
    for row in rows:
        alpha = row["made"]["alpha"]
        lines.append(f"| {row['method']} | {row['task']} | " + " | ".join(cell(row, m) for m in metrics) + " | "
                     + " | ".join(cell(row["paper"], m) for m in metrics) + f" | {'' if alpha is None else alpha} |")
    if skipped:
        lines += ["", "Not run:"] + [f"- {spec.method} ({spec.task}): {reason}" for spec, reason in skipped]
    notes = [f"- {row['method']} ({row['task']}): {note}" for row in rows for note in row["made"]["notes"]]
    if notes:
        lines += ["", "Alpha choice:"] + notes
    if not any(row["paper"] for row in rows):
        lines += ["", f"The paper gives no figures for dataset {reproduction.dataset!r} at K = "
                      f"{', '.join(map(str, reproduction.ks))}."]
    return "\n".join(lines) + "\n"


def write_outputs(reproduction: Reproduction, rows: list[dict], skipped: list[tuple[RowSpec, str]]) -> dict:
    """table.json and table.md for the rows so far; returns table.json's content."""
    content = table_json(reproduction.config.table, reproduction.dataset, rows)
    write_json(reproduction.path("table.json"), content)
    write_text(reproduction.path("table.md"), table_markdown(reproduction, rows, skipped))
    return content


def reproduce(config: ReproduceConfig, on_row: Callable[[str], None] | None = None) -> dict:
    """Run every row the caches allow (finished rows kept), write table.json and table.md after
    each row, holding the folder's writer lock throughout; returns table.json's content."""
    reproduction = Reproduction(config)
    with folder_lock(config.out, config.lock):
        reproduction.claim_folder()
        rows, skipped = [], []
        for spec in TABLES[config.table]:
            row = reproduction.finished(spec)
            reason = None if row else why_not(spec, reproduction.caches)
            if reason:
                skipped.append((spec, reason))
                continue
            if on_row:
                on_row(f"{spec.method} ({spec.task}): "
                       + ("kept from an earlier run" if row else "training and scoring"))
            rows.append(row or reproduction.score(spec))
            write_outputs(reproduction, rows, skipped)
        if not rows:
            raise UsageError(f"{config.cache}: no row of table {config.table} can be run "
                             f"({'; '.join(reason for _, reason in skipped)})")
        return write_outputs(reproduction, rows, skipped)
