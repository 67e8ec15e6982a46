"""The `ovml` command line: thin commands that validate options, build a config, call one library function."""
from __future__ import annotations

import functools
import os
import sys

import click

SHORT_NAMES = {"nuswide": "nus", "openimages": "oi", "coco": "coco"}


def user_errors(command):
    """Turn the library's expected failures into one-line errors (exit status 1)."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from .cache.schema import CacheError
        from .extract.backbone import BackboneError
        from .extract.datasets import DatasetError
        from .extract.runner import ExtractError
        from .extract.text import PromptError
        from .errors import UsageError
        try:
            return command(*args, **kwargs)
        except (CacheError, BackboneError, DatasetError, ExtractError, PromptError, UsageError) as err:
            raise click.ClickException(str(err)) from err
        except OSError as err:
            where = f"{err.filename}: " if getattr(err, "filename", None) else ""
            raise click.ClickException(f"{where}{err.strerror or err}") from err
    return wrapper


def device_option(command):
    return click.option("--device", default=None, help="torch device: cpu or cuda:N (default cpu).")(command)


def resolve_device(gpu: int | None, device: str | None) -> str:
    if gpu is not None and device is not None:
        raise click.UsageError("give --gpu or --device, not both")
    return f"cuda:{gpu}" if gpu is not None else (device or "cpu")


def split_list(value: str | None) -> tuple[str, ...] | None:
    return tuple(part.strip() for part in value.split(",") if part.strip()) if value else None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ovml")
def main() -> None:
    """Open-vocabulary multi-label classification with CLIP over a feature cache.

    extract runs CLIP's image tower once into a cache; train-head, eval, predict and add-labels
    never run it again.
    """


@main.command()
@click.option("--dataset", type=click.Choice(["folder", "nuswide", "openimages", "coco"]), required=True,
              help="Dataset adapter (file formats in the README).")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="Dataset root [default: $OVML_DATA/<dataset> or data/<dataset>].")
@click.option("--out", default=None,
              help="Cache path, *.zarr (default) or *.h5 [default: cache/<short>.zarr]; Zarr takes fsspec URLs.")
@click.option("--model", default="RN50", show_default=True,
              help="CLIP ResNet name (RN50, RN101, RN50x4, RN50x16, RN50x64) or a local weights file.")
@click.option("--gpu", type=int, default=None, help="Use cuda:N in fp16 (as clip does).")
@device_option
@click.option("--splits", default=None, help="Comma-separated splits [default: all].")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--workers", type=click.IntRange(0), default=2, show_default=True, help="Image decode processes.")
@click.option("--unit-rows", type=click.IntRange(1), default=64, show_default=True,
              help="Rows per chunk and work unit (resume granularity).")
@click.option("--prompts", default=None, help="'imagenet80' or a file with one template per line "
              "[default: 'a photo of a {}.'].")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N images of each split.")
@click.option("--dask", default=None, help="local:N (N worker processes) or tcp://HOST:PORT.")
@click.option("--strict", is_flag=True, help="Stop at the first unreadable image.")
@click.option("--overwrite", is_flag=True, help="Replace a cache made by another model or dataset.")
@click.option("--download-root", default=None, help="Where named models are kept [$OVML_CLIP_CACHE].")
@click.option("--images", default=None, help="Image folder, where not under the adapter's default place.")
@click.option("--unseen", default=None, help="coco: file of unseen label names [default: the 65/15 split].")
@click.option("--placeholder", type=click.Path(exists=True, dir_okay=False), default=None,
              help="nuswide: Flickr's placeholder image; identical files are skipped (files <= 4000 bytes always are).")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="torch CPU threads [default: torch's; Dask workers get the coordinator's].")
@user_errors
def extract(dataset, root, out, model, gpu, device, splits, batch_size, workers, unit_rows, prompts,
            limit, dask, strict, overwrite, download_root, images, unseen, placeholder, threads) -> None:
    """Run CLIP's image tower once and write X', CLIP's global feature, labels and text to a cache.

    Re-running the same command resumes an interrupted extraction.
    """
    from .config import ExtractConfig
    from .extract.runner import run_extraction
    root = root or os.path.join(os.environ.get("OVML_DATA", "data"), dataset)
    out = out or os.path.join("cache", SHORT_NAMES.get(dataset, os.path.basename(os.path.abspath(root))) + ".zarr")
    if dask and out.endswith((".h5", ".hdf5")):
        raise click.UsageError("--dask needs a Zarr store: HDF5 has a single writer, so workers cannot "
                               "write their units into it concurrently")
    config = ExtractConfig(dataset=dataset, root=root, out=out, model=model, device=resolve_device(gpu, device),
                           splits=split_list(splits), batch_size=batch_size, workers=workers,
                           unit_rows=unit_rows, prompts=prompts, limit=limit, dask=dask, strict=strict,
                           overwrite=overwrite, download_root=download_root, images=images, unseen=unseen,
                           placeholder=placeholder, threads=threads)
    if dask:
        from .extract.distributed import run_distributed
        summary = run_distributed(config)
    else:
        summary = run_extraction(config)
    for line in summary.lines():
        click.echo(line)


@main.command()
@click.argument("path")
@user_errors
def info(path) -> None:
    """Describe a cache: schema, backbone, dataset, splits, labels, size, completeness."""
    from .cache.info import describe_cache
    for line in describe_cache(path):
        click.echo(line)


def parse_floats(value: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"expected numbers separated by commas, got {value!r}", param_hint=option) from None


@main.command("train-head")
@click.option("--cache", default=None, help="Cache path [default: the only cache under cache/].")
@click.option("--out", default=None, help="Run folder [default: runs/<cache stem>-<head>].")
@click.option("--head", "head_name", type=click.Choice(["ovml", "linear"]), default="ovml", show_default=True)
@click.option("--epochs", type=click.IntRange(1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--lr", type=float, default=2e-4, show_default=True, help="One-cycle maximum learning rate.")
@click.option("--weight-decay", type=float, default=0.0, show_default=True)
@click.option("--contrastive-weight", type=float, default=1.0, show_default=True,
              help="lambda on the supervised contrastive loss.")
@click.option("--no-contrastive", is_flag=True, help="Ranking loss only (the paper's ablation).")
@click.option("--tau", type=float, default=0.2, show_default=True, help="Contrastive temperature.")
@click.option("--logit-scale", type=float, default=100.0, show_default=True,
              help="Cosine scores are multiplied by this in the losses (CLIP's 100).")
@click.option("--rank-loss", type=click.Choice(["softplus", "hinge"]), default="softplus", show_default=True,
              help="softplus: OVML's log(1+exp); hinge: LESA/BiAM's margin-1 hinge.")
@click.option("--q-init", type=click.Choice(["random", "pinv"]), default="random", show_default=True)
@click.option("--negatives", type=click.IntRange(1), default=None,
              help="Sample K negative labels per batch (all positives kept) for large vocabularies.")
@click.option("--val-fraction", type=click.FloatRange(0, 0.5), default=0.05, show_default=True,
              help="Training units held out for per-epoch seen-label mAP (best epoch kept).")
@click.option("--pseudo-unseen", type=click.FloatRange(0, 0.9), default=0.0, show_default=True,
              help="Seen labels held out of training for `eval --alpha auto`.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--gpu", type=int, default=None, help="Use cuda:N.")
@device_option
@click.option("--in-memory", is_flag=True, help="Read the split into RAM once instead of streaming.")
@click.option("--shuffle-buffer", type=click.IntRange(1), default=8, show_default=True,
              help="Chunks mixed together when streaming.")
@click.option("--split", default="train", show_default=True, help="Cache split to train on.")
@click.option("--allow-partial", is_flag=True, help="Train on the finished units of an incomplete cache.")
@click.option("--resume", is_flag=True, help="Continue from the run's last epoch checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run folder.")
@user_errors
def train_head(cache, out, head_name, epochs, batch_size, lr, weight_decay, contrastive_weight, no_contrastive,
               tau, logit_scale, rank_loss, q_init, negatives, val_fraction, pseudo_unseen, seed, gpu, device,
               in_memory, shuffle_buffer, split, allow_partial, resume, overwrite) -> None:
    """Train a head on the cache's seen labels (the backbone never runs)."""
    from .config import TrainConfig
    from .pipelines.locate import cache_stem, only_cache
    from .pipelines.train import train_head as run_training
    cache = cache or only_cache()
    out = out or os.path.join("runs", f"{cache_stem(cache)}-{head_name}")
    config = TrainConfig(cache=cache, out=out, head=head_name, epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, contrastive_weight=0.0 if no_contrastive else contrastive_weight,
                         tau=tau, logit_scale=logit_scale, rank_loss=rank_loss, q_init=q_init, negatives=negatives,
                         val_fraction=val_fraction, pseudo_unseen=pseudo_unseen, seed=seed,
                         device=resolve_device(gpu, device), split=split, in_memory=in_memory,
                         shuffle_buffer=shuffle_buffer, allow_partial=allow_partial)
    result = run_training(config, resume=resume, overwrite=overwrite)
    best = "n/a" if result.best_val_map is None else f"{result.best_val_map:.2f}"
    click.echo(f"{result.out}: {result.epochs} epochs in {result.seconds:.1f} s, last loss {result.last_loss:.4f}, "
               f"best epoch {result.best_epoch} (validation seen mAP {best})")


@main.command("eval")
@click.option("--cache", default=None, help="Cache path [default: the only cache under cache/].")
@click.option("--head", "heads", multiple=True,
              help="Run folder of a trained head (repeatable) [default: newest run under runs/ on this cache].")
@click.option("--split", type=click.Choice(["unseen", "all", "seen"]), default="unseen", show_default=True,
              help="unseen: ZSL; all: GZSL; seen: seen labels only.")
@click.option("--alpha", default="0,auto", show_default=True,
              help="Interpolation weight(s) with CLIP's global feature: A, A,B,..., and/or auto.")
@click.option("--k", "ks", default=None, help="Top-K list [default: 3,5; 10,20 above 5,000 labels].")
@click.option("--baselines", default="clip-ml,dense", show_default=True, help="Training-free rows, or 'none'.")
@click.option("--dense-top-k", type=click.IntRange(1), default=3, show_default=True)
@click.option("--out", default=None, help="Folder for metrics.json, report.md, plots [default: runs/eval-<cache>-<split>].")
@click.option("--json", "as_json", is_flag=True, help="Print metrics.json to stdout.")
@click.option("--image-split", default="test", show_default=True, help="Cache split holding the test images.")
@click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True)
@click.option("--gpu", type=int, default=None, help="Use cuda:N.")
@device_option
@click.option("--allow-partial", is_flag=True, help="Evaluate the finished units of an incomplete cache.")
@user_errors
def eval_command(cache, heads, split, alpha, ks, baselines, dense_top_k, out, as_json, image_split, batch_size,
                 gpu, device, allow_partial) -> None:
    """Score ZSL/GZSL with LESA's protocol: CLIP-ML, dense CLIP and trained heads at each alpha."""
    import json
    from .config import EvalConfig
    from .pipelines.evaluate import evaluate_cache
    from .pipelines.locate import cache_stem, newest_run_for, only_cache
    from .pipelines.report import table, write_report
    cache = cache or only_cache()
    parts = [part.strip() for part in alpha.split(",") if part.strip()]
    auto = "auto" in parts
    alphas = parse_floats(",".join(p for p in parts if p != "auto"), "--alpha")
    if any(not 0 <= a <= 1 for a in alphas):
        raise click.BadParameter("alpha must lie in [0, 1]", param_hint="--alpha")
    if not heads:
        newest = newest_run_for(cache)
        heads = (newest,) if newest else ()
        if not as_json:
            click.echo(f"head: {newest} (newest run on this cache)" if newest else
                       "no trained head found for this cache under runs/: baselines only")
    config = EvalConfig(cache=cache, heads=tuple(heads), split=split, alphas=alphas, alpha_auto=auto,
                        ks=tuple(int(k) for k in parse_floats(ks, "--k")) if ks else None,
                        baselines=() if baselines == "none" else tuple(b.strip() for b in baselines.split(",")),
                        out=out, device=resolve_device(gpu, device), image_split=image_split,
                        batch_size=batch_size, dense_top_k=dense_top_k, allow_partial=allow_partial,
                        progress=not as_json)
    evaluation = evaluate_cache(config)
    out = out or os.path.join("runs", f"eval-{cache_stem(cache)}-{split}")
    written = write_report(evaluation, out)
    if as_json:
        click.echo(json.dumps(evaluation.summary, indent=2))
        return
    for line in table(evaluation.summary) + [""] + evaluation.summary["notes"]:
        click.echo(line)
    click.echo(f"wrote {', '.join(written)}")


@main.command()
@click.argument("images", nargs=-1, required=True)
@click.option("--labels", default=None, help='Comma-separated label names, e.g. "dog,beach,sunset".')
@click.option("--labels-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="File with one label name per line.")
@click.option("--head", default=None, help="Run folder of a trained head [default: CLIP-ML alone].")
@click.option("--model", default=None, help="CLIP ResNet name or weights file [default: the head's, else RN50].")
@click.option("--top-k", type=click.IntRange(1), default=5, show_default=True)
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Interpolation with CLIP's global feature (with --head).")
@click.option("--prompts", default=None, help="'imagenet80' or a template file "
              "[default: the head's cache's templates, else 'a photo of a {}.'].")
@click.option("--explain", "explain_dir", default=None, help="Write attention-map PNGs (needs --head) here.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--gpu", type=int, default=None, help="Use cuda:N.")
@device_option
@click.option("--download-root", default=None, help="Where named models are kept [$OVML_CLIP_CACHE].")
@user_errors
def predict(images, labels, labels_file, head, model, top_k, alpha, prompts, explain_dir, as_json, gpu, device,
            download_root) -> None:
    """Top-K labels of new images for any label list (open vocabulary)."""
    import json
    from .pipelines.predict import Predictor, expand_images, read_label_names
    names = read_label_names(labels, labels_file)
    predictor = Predictor(names, model, head, alpha, resolve_device(gpu, device), download_root, prompts)
    predictions = predictor.predict(expand_images(list(images)), top_k, explain=explain_dir)
    written = [p.explanation for p in predictions if p.explanation]
    if as_json:
        click.echo(json.dumps([p.as_json() for p in predictions], indent=2))
        return
    for prediction in predictions:
        shown = ", ".join(f"{name} {score:.3f}" for name, score in prediction.labels)
        click.echo(f"{prediction.image}: {shown or 'unreadable: ' + prediction.error}")
    if written:
        click.echo(f"attention maps: {len(written)} PNG(s) in {explain_dir}")


@main.command("add-labels")
@click.option("--cache", required=True, help="Cache path.")
@click.option("--names", "names_file", type=click.Path(exists=True, dir_okay=False), required=True,
              help="New label names, one per line.")
@click.option("--unseen/--seen", default=True, show_default=True, help="Mark the new labels unseen or seen.")
@click.option("--annotations", type=click.Path(exists=True, dir_okay=False), default=None,
              help="CSV id,labels: images listed get +1/-1 on the new labels (others stay unannotated).")
@click.option("--model", default=None, help="CLIP name or file [default: the cache's backbone].")
@click.option("--gpu", type=int, default=None, help="Use cuda:N.")
@device_option
@click.option("--download-root", default=None, help="Where named models are kept [$OVML_CLIP_CACHE].")
@user_errors
def add_labels(cache, names_file, unseen, annotations, model, gpu, device, download_root) -> None:
    """Append new label names to a cache with CLIP's text tower only (no image is re-read)."""
    from .pipelines.add_labels import add_labels as append_labels
    added = append_labels(cache, names_file, unseen, model, resolve_device(gpu, device), download_root, annotations)
    click.echo(f"{cache}: added {len(added)} {'unseen' if unseen else 'seen'} label(s): {', '.join(added[:10])}"
               + (" ..." if len(added) > 10 else ""))


@main.command()
@click.option("--out", default=os.path.join("runs", "demo"), show_default=True, help="Folder for everything.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quick", is_flag=True, help="A smaller world and fewer epochs (a smoke test).")
@user_errors
def demo(out, seed, quick) -> None:
    """Offline demo on the planted synthetic world: extract-free train + ZSL/GZSL evaluation."""
    from .pipelines.demo import run_demo
    for line in run_demo(out, seed, quick, echo=click.echo):
        click.echo(line)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
