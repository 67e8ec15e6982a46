"""Defaults have one home, the config dataclasses: every option carrying a config field defaults to
that field's default, read from the dataclass (never written beside it), and the library called
with a bare config does what the command does with no options."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

from ovml.config import (AddLabelsConfig, CalibrateConfig, CheckConfig, DemoConfig, EvalConfig, ExportConfig, ExtractConfig,
                         FinetuneConfig, PredictConfig, ReproduceConfig, ServeConfig, TagConfig, TrainConfig)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = (AddLabelsConfig, CheckConfig, DemoConfig, EvalConfig, ExportConfig, ExtractConfig, FinetuneConfig,
           PredictConfig, ReproduceConfig, ServeConfig, TagConfig, TrainConfig)


def same(config: type, *names: str) -> dict:
    """Options whose parameter is named as the config field it fills."""
    return {name: (config, (name,)) for name in names}


# command -> {parameter: (config, the fields it fills)}: every option whose value lands in a config.
CARRIED = {
    "extract": same(ExtractConfig, "model", "device", "splits", "batch_size", "workers", "decode", "unit_rows",
                    "prompts", "limit", "dask", "strict", "overwrite", "download_root", "images", "unseen",
                    "placeholder", "threads", "allow_outside_root", "engine", "tower_precision", "lock"),
    "check": same(CheckConfig, "rows"),
    "train-head": {"head_name": (TrainConfig, ("head",)), **same(
        TrainConfig, "epochs", "batch_size", "lr", "lr_range_steps", "weight_decay", "contrastive_weight", "tau",
        "logit_scale", "rank_loss", "q_init", "attention_scales", "attention_top_k", "frozen", "attention_heads",
        "vit_output", "negatives", "val_fraction", "pseudo_unseen", "seed", "device", "amp", "in_memory",
        "shuffle_buffer", "split", "allow_partial", "lock")},
    "eval": {"alpha": (EvalConfig, ("alphas", "alpha_auto")), **same(
        EvalConfig, "split", "ks", "baselines", "dense_top_k", "image_split", "batch_size", "scratch", "device",
        "amp", "allow_partial", "decisions")},
    "predict": {"explain_dir": (PredictConfig, ("explain",)), **same(
        PredictConfig, "head", "model", "top_k", "threshold", "calibration", "alpha", "prompts", "device",
        "download_root", "engine", "tower_precision")},
    "tag": {"formats": (TagConfig, ("formats",)), **same(
        TagConfig, "cache", "labels", "labels_file", "only", "exclude", "always_first", "head", "alpha", "model",
        "prompts", "top_k", "threshold", "precision", "thresholds_file", "calibration", "long", "caption_extension",
        "xmp_name", "hierarchy", "save_cache", "device", "batch_size", "workers", "decode", "unit_images", "dask", "strict", "threads",
        "download_root", "engine", "tower_precision", "lock")},
    "calibrate": same(CalibrateConfig, "head", "cache", "images", "out", "alpha", "device", "lock"),
    "add-labels": same(AddLabelsConfig, "unseen", "annotations", "model", "device", "download_root", "lock"),
    "finetune": same(FinetuneConfig, "model", "epochs", "lr", "weight_decay", "batch_size", "logit_scale", "device",
                     "split", "prompts", "limit", "seed", "workers", "threads", "download_root", "images", "unseen",
                     "placeholder", "allow_outside_root", "lock"),
    "reproduce": same(ReproduceConfig, "finetuned_cache", "epochs", "settings", "device", "lock"),
    "serve": {**same(ServeConfig, "host", "port", "token", "insecure", "max_batch", "batch_wait_ms"),
              **same(PredictConfig, "head", "model", "prompts", "calibration", "device", "download_root", "engine",
                     "tower_precision")},
    "export": same(ExportConfig, "alpha", "model", "prompts", "download_root", "lock"),
    "demo": same(DemoConfig, "out", "seed", "quick"),
}
# command -> parameters with no default of their own: fields without a default that the command
# fills or computes (cache, out, root, the newest head), inputs, and switches of the command itself.
OWN = {
    "extract": {"dataset", "root", "out", "gpu"},
    "info": {"path"},
    "check": {"path", "as_json"},
    "train-head": {"cache", "out", "no_contrastive", "paper", "gpu", "resume", "overwrite"},
    "eval": {"cache", "heads", "out", "as_json", "gpu"},
    "predict": {"images", "labels", "labels_file", "as_json", "gpu"},
    "add-labels": {"cache", "names_file", "gpu"},
    "finetune": {"dataset", "root", "out", "gpu", "overwrite"},
    "reproduce": {"table", "cache", "out", "gpu"},
    "serve": {"gpu"},
    "demo": set(),
    "tag": {"inputs", "out", "splits", "overwrite", "append", "gpu"},
    "calibrate": {"annotations", "gpu"},
    "export": {"head", "out", "labels", "labels_file"},
}


def field_default(config: type, name: str):
    (field,) = [field for field in dataclasses.fields(config) if field.name == name]
    return field.default


def as_given_to_click(config: type, names: tuple[str, ...]):
    """The fields' defaults after the command line's conversion: tuples as comma lists, and
    EvalConfig's alphas and alpha_auto as one --alpha."""
    from ovml.cli.common import comma_list
    from ovml.cli.evaluate import alpha_text
    values = [field_default(config, name) for name in names]
    if names == ("alphas", "alpha_auto"):
        return alpha_text(*values)
    (value,) = values
    return comma_list(value) if isinstance(value, tuple) else value


def mismatches() -> list[str]:
    """One line per option whose default, as click reports it, is not its config field's, or that is
    unaccounted for."""
    import click

    from ovml.cli import main
    unset = getattr(click.core, "UNSET", None)   # click >= 8.3: a parameter given no default
    problems = []
    for name, command in main.commands.items():
        carried, own, context = CARRIED.get(name, {}), OWN[name], click.Context(command)
        for param in command.params:
            value = param.get_default(context, call=False)
            if param.name in carried:
                expected = as_given_to_click(*carried[param.name])
                if value != expected or type(value) is not type(expected):
                    problems.append(f"{name} {param.opts[0]}: default {value!r}, config {expected!r}")
            elif param.name in own:
                if value is not unset and value not in (None, (), False):
                    problems.append(f"{name} {param.opts[0]}: default {value!r} written by hand")
            else:
                problems.append(f"{name} {param.opts[0]}: neither a config field nor listed as the command's own")
    return problems


def plant_markers() -> None:
    """Give every config field with a default a value that no option could have written by hand
    (before `ovml.cli` is imported), so that an option reading it shows it."""
    salt = 0
    for config in CONFIGS:
        for field in dataclasses.fields(config):
            if field.default is dataclasses.MISSING:
                continue
            salt += 1
            kind = field.type.split(" | ")[0]          # "tuple[float, ...] | None" -> "tuple[float, ...]"
            markers = {"bool": not field.default, "int": 9000 + salt, "float": 900.5 + salt,
                       "str": f"marker-{field.name}", "tuple[float, ...]": (0.25 + salt, 0.75),
                       "tuple[int, ...]": (7 + salt, 9), "tuple[str, ...]": (f"marker{salt}", "marker")}
            field.default = markers.get(kind, field.default)   # ServeConfig.tagger: a config, no option


def test_every_option_carrying_a_config_field_defaults_to_that_fields_default():
    assert mismatches() == []


def test_no_option_writes_a_default_beside_its_config_field():
    """With every dataclass default changed before the CLI is built, every option follows."""
    code = "import json, tests.test_cli_defaults as t; t.plant_markers(); print(json.dumps(t.mismatches()))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_the_default_of_eval_is_the_default_of_eval_config():
    from ovml.cli import main
    from ovml.cli.evaluate import parse_alphas
    (alpha,) = [param for param in main.commands["eval"].params if param.name == "alpha"]
    assert alpha.default == "0,auto"
    assert parse_alphas(alpha.default) == (EvalConfig("cache").alphas, EvalConfig("cache").alpha_auto) == ((0.0,), True)


def test_dataset_and_head_choices_come_from_the_adapter_table_and_the_head_registry():
    from ovml.cli import main
    from ovml.extract.datasets import ADAPTERS
    from ovml.heads import HEADS, VIT_HEADS
    choices = {(command, param.name): tuple(param.type.choices) for command in ("extract", "finetune", "train-head")
               for param in main.commands[command].params if param.name in ("dataset", "head_name")}
    assert choices == {("extract", "dataset"): tuple(ADAPTERS), ("finetune", "dataset"): tuple(ADAPTERS),
                       ("train-head", "head_name"): tuple(dict.fromkeys([*HEADS, *VIT_HEADS]))}


def test_evaluate_with_only_a_cache_and_heads_scores_the_rows_of_ovml_eval(small_world, tmp_path):
    from click.testing import CliRunner

    import ovml
    from ovml.cli import main
    run = str(tmp_path / "run")
    ovml.train_head(TrainConfig(cache=small_world, out=run, epochs=1, lr=1e-2, pseudo_unseen=0.2, progress=False))
    result = CliRunner().invoke(main, ["eval", "--cache", small_world, "--head", run, "--json",
                                       "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    command = json.loads(result.output)
    library = ovml.evaluate(EvalConfig(small_world, (run,))).summary
    assert library["rows"] == command["rows"] and library["notes"] == command["notes"]
    assert {(row["method"], row["alpha"]) for row in library["rows"]} >= {("clip-ml", None), ("dense", None),
                                                                           ("ovml", 0.0)}
    assert any(note.startswith(f"{run}: alpha") for note in library["notes"])   # alpha auto
