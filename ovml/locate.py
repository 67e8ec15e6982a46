"""Defaults the short commands rely on (docs/architecture.md): the only cache under cache/, the newest
run under runs/ trained on a given cache."""
from __future__ import annotations

import glob
import json
import os

from .errors import UsageError


def only_cache(folder: str = "cache") -> str:
    """The single cache (*.zarr or *.h5) under `folder`; several or none is an error listing them."""
    found = sorted(glob.glob(os.path.join(folder, "*.zarr")) + glob.glob(os.path.join(folder, "*.h5")))
    if not found:
        raise UsageError(f"no cache under {folder}/: run `ovml extract` first or pass --cache PATH")
    if len(found) > 1:
        raise UsageError(f"several caches under {folder}/ ({', '.join(found)}): pass --cache PATH")
    return found[0]


def cache_stem(cache: str) -> str:
    """`cache/nus.zarr` -> `nus`."""
    return os.path.splitext(os.path.basename(cache.rstrip("/")))[0]


def newest_run_for(cache: str, folder: str = "runs") -> str | None:
    """The most recently written run folder whose config.json names `cache`, or None."""
    target = os.path.abspath(cache)
    candidates = []
    for config in glob.glob(os.path.join(folder, "*", "config.json")):
        try:
            with open(config, encoding="utf-8") as handle:
                recorded = json.load(handle).get("cache", {}).get("path")
        except (OSError, ValueError):
            continue
        head = os.path.join(os.path.dirname(config), "head.pt")
        if recorded == target and os.path.exists(head):
            candidates.append((os.path.getmtime(head), os.path.dirname(config)))
    return max(candidates)[1] if candidates else None
