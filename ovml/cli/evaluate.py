"""`ovml eval`: ZSL / GZSL scores with LESA's protocol."""
from __future__ import annotations

import os

import click

from ..config import KS, LARGE_VOCABULARY, LARGE_VOCABULARY_KS, EvalConfig
from .common import NAMES, amp_option, comma_list, default, device_options, parse_floats, resolve_device, user_errors


def alpha_text(alphas: tuple[float, ...], auto: bool) -> str:
    """((0.0,), True) -> '0,auto': EvalConfig's alphas and alpha_auto as --alpha writes them."""
    return ",".join([f"{a:g}" for a in alphas] + (["auto"] if auto else []))


def parse_alphas(alpha: str) -> tuple[tuple[float, ...], bool]:
    """'0,0.5,auto' -> ((0.0, 0.5), True); every number must lie in [0, 1]."""
    parts = [part.strip() for part in alpha.split(",") if part.strip()]
    alphas = parse_floats(",".join(p for p in parts if p != "auto"), "--alpha")
    if any(not 0 <= a <= 1 for a in alphas):
        raise click.BadParameter("alpha must lie in [0, 1]", param_hint="--alpha")
    return alphas, "auto" in parts


@click.command("eval")
@click.option("--cache", default=None, help="Cache path [default: the only cache under cache/].")
@click.option("--head", "heads", multiple=True,
              help="Run folder of a trained head (repeatable) [default: newest run under runs/ on this cache].")
@click.option("--split", type=click.Choice(["unseen", "all", "seen"]), default=default(EvalConfig, "split"),
              show_default=True, help="unseen: ZSL; all: GZSL; seen: seen labels only.")
@click.option("--alpha", default=alpha_text(default(EvalConfig, "alphas"), default(EvalConfig, "alpha_auto")),
              show_default=True, help="Interpolation weight(s) with CLIP's global feature: A, A,B,..., and/or auto.")
@click.option("--k", "ks", default=comma_list(default(EvalConfig, "ks")),
              help=f"Top-K list [default: {comma_list(KS)}; {comma_list(LARGE_VOCABULARY_KS)} above "
                   f"{LARGE_VOCABULARY:,} labels].")
@click.option("--baselines", type=NAMES, default=comma_list(default(EvalConfig, "baselines")), show_default=True,
              help="Training-free rows, or 'none'.")
@click.option("--dense-top-k", type=click.IntRange(1), default=default(EvalConfig, "dense_top_k"), show_default=True)
@click.option("--out", default=None, help="Folder for metrics.json, report.md, plots [default: runs/eval-<cache>-<split>].")
@click.option("--json", "as_json", is_flag=True, help="Print metrics.json to stdout.")
@click.option("--image-split", default=default(EvalConfig, "image_split"), show_default=True,
              help="Cache split holding the test images.")
@click.option("--batch-size", type=click.IntRange(1), default=default(EvalConfig, "batch_size"), show_default=True)
@click.option("--scratch", default=default(EvalConfig, "scratch"),
              help="Folder for the temporary score store, deleted afterwards; about 4 bytes x annotated "
                   "entries x scored rows [default: the system's temp folder].")
@device_options(EvalConfig)
@amp_option(EvalConfig)
@click.option("--allow-partial", is_flag=True, default=default(EvalConfig, "allow_partial"),
              help="Evaluate the finished units of an incomplete cache.")
@click.option("--decisions", is_flag=True, default=default(EvalConfig, "decisions"),
              help="Also the calibrated decisions (--threshold auto): macro/micro-F1 and ECE, seen and unseen apart.")
@user_errors
def eval_command(cache, heads, split, alpha, ks, baselines, dense_top_k, out, as_json, image_split, batch_size,
                 scratch, gpu, device, amp, allow_partial, decisions) -> None:
    """Score ZSL/GZSL with LESA's protocol: CLIP-ML, dense CLIP and trained heads at each alpha."""
    import json
    from ..locate import cache_stem, newest_run_for, only_cache
    from ..evaluation.report import evaluate_and_report, table
    cache = cache or only_cache()
    out = out or os.path.join("runs", f"eval-{cache_stem(cache)}-{split}")
    alphas, auto = parse_alphas(alpha)
    if not heads:
        newest = newest_run_for(cache)
        heads = (newest,) if newest else ()
        if not as_json:
            click.echo(f"head: {newest} (newest run on this cache)" if newest else
                       "no trained head found for this cache under runs/: baselines only")
    config = EvalConfig(cache=cache, heads=tuple(heads), split=split, alphas=alphas, alpha_auto=auto,
                        ks=tuple(int(k) for k in parse_floats(ks, "--k")) if ks else None, baselines=baselines,
                        out=out, device=resolve_device(gpu, device), amp=amp, image_split=image_split,
                        batch_size=batch_size, dense_top_k=dense_top_k, allow_partial=allow_partial,
                        scratch=scratch, decisions=decisions, progress=not as_json)
    evaluation, written = evaluate_and_report(config)
    if decisions:
        from ..calibrate.decisions import decision_lines, decision_rows
        evaluation.summary["decisions"] = decision_rows(config)
    if as_json:
        click.echo(json.dumps(evaluation.summary, indent=2))
        return
    extra = [""] + decision_lines(evaluation.summary["decisions"]) if decisions else []
    for line in table(evaluation.summary) + extra + [""] + evaluation.summary["notes"]:
        click.echo(line)
    click.echo(f"wrote {', '.join(written)}")
