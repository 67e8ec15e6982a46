"""`ovml info`: what a cache holds, readable without loading any features."""
from __future__ import annotations

import json

import numpy as np

from .reader import CacheReader
from .schema import BACKBONE_KINDS


def describe_cache(path: str) -> list[str]:
    """Lines describing schema, backbone, dataset, splits (rows done/ok), labels, size, completeness."""
    reader = CacheReader(path, allow_partial=True)
    try:
        backbone = reader.backbone
        lines = [f"{path}: ovml cache schema v1, {'complete' if reader.complete else 'INCOMPLETE'}",
                 f"backbone: {backbone.get('name')}, {BACKBONE_KINDS[reader.kind]} "
                 f"(sha256 {str(backbone.get('weights_sha256'))[:12]}...), "
                 f"{backbone.get('input_resolution')} px, grid {backbone.get('grid')}, "
                 f"C={backbone.get('channels')}, D={backbone.get('embed_dim')}, {backbone.get('feature_dtype')}"
                 + (", class token stored as cls" if reader.kind == "vit" else "")
                 + (f"; tower {backbone['engine']}, {backbone['precision']}" if "precision" in backbone else ""),
                 f"labels: {reader.num_labels} ({int(reader.seen.sum())} seen, {int((~reader.seen).sum())} unseen); "
                 f"prompts: {len(reader.prompts)} template(s)"]
        for split in reader.splits:
            done = reader.units_done(split)
            usable = reader.usable_rows(split)
            rows_done = int(np.repeat(done, reader.unit_rows(split))[: reader.num_rows(split)].sum())
            lines.append(f"split {split}: N={reader.num_rows(split)}, rows done {rows_done}, ok {int(usable.sum())}, "
                         f"units {int(done.sum())}/{len(done)}")
        lines.append(f"size on disk: {reader.store.bytes_on_disk() / 1e6:.1f} MB")
        dataset = dict(reader.dataset)
        zeroed = dataset.pop("unseen_labels_on_training_split", None)
        if zeroed:
            lines.append(f"unseen labels on split {zeroed['split']}: {zeroed['value']}")
        lines.append("dataset: " + json.dumps(dataset, sort_keys=True))
        return lines
    finally:
        reader.close()

