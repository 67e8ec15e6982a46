"""ovml: open-vocabulary multi-label image classification with CLIP, over a feature cache.

The Python face of the same pipelines as the `ovml` command line:

    cache = ovml.open_cache("cache/nus.zarr")         # .label_names, .seen, .splits, .arrays(split) (Dask)
    result = ovml.train_head(ovml.TrainConfig(cache="cache/nus.zarr", out="runs/nus-ovml"))
    evaluation = ovml.evaluate(ovml.EvalConfig(cache="cache/nus.zarr", heads=(result.out,)))
    tagger = ovml.load_tagger("runs/nus-ovml")          # .predict(images, labels, top_k=3)
    ovml.export_tagger(ovml.ExportConfig(head="runs/nus-ovml", out="tagger-onnx"))  # ONNX, onnxruntime alone
    ovml.reproduce(ovml.ReproduceConfig(table=2, cache="cache/nus.zarr", out="runs/table2"))
    ovml.tag(ovml.TagConfig(out="tagged", inputs=("photos",), labels="dog,beach", formats=("txt", "parquet")))

Names load on first use, so `import ovml` does not import torch.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = {"open_cache": "ovml.api", "load_tagger": "ovml.api", "train_head": "ovml.api",
           "evaluate": "ovml.api", "export_tagger": "ovml.api", "Cache": "ovml.api", "TrainConfig": "ovml.config",
           "EvalConfig": "ovml.config", "ExtractConfig": "ovml.config", "PredictConfig": "ovml.config",
           "finetune": "ovml.train.finetune", "FinetuneConfig": "ovml.config",
           "reproduce": "ovml.experiments.reproduce", "ReproduceConfig": "ovml.config",
           "tag": "ovml.api", "TagConfig": "ovml.config", "ExportConfig": "ovml.config"}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'ovml' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
