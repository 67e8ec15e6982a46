"""Sidecar files beside each tagged image; the image itself is only ever read.

txt (kohya-ss's convention for image-generator datasets): `photo.jpg` -> `photo.txt`, the
present tags comma-separated, --always-first leading, then best first. An existing sidecar is left
as it is unless `overwrite` (replaced) or `append` (its tags kept, ours added after them, none
twice, judged on `name_key`). Each file is written to a temporary name and renamed into place.

xmp: see `xmp.py`.
"""
from __future__ import annotations

import os
from collections import Counter

from ..errors import UsageError
from ..files import write_text
from .vocabulary import name_key

SIDECAR_MODES = ("keep", "overwrite", "append")
TXT_SEPARATOR = ", "


def txt_path(image: str, extension: str) -> str:
    return os.path.splitext(image)[0] + extension


def xmp_path(image: str, naming: str) -> str:
    """photo.jpg -> photo.jpg.xmp (naming 'full', darktable's) or photo.xmp ('stem', Lightroom's)."""
    return image + ".xmp" if naming == "full" else os.path.splitext(image)[0] + ".xmp"


def check_sidecar_paths(images: list[str], sidecar) -> None:
    """Refuse (one line) two images that would share one sidecar, and sidecar folders that
    cannot be written, before any work."""
    counts = Counter(os.path.abspath(sidecar(image)) for image in images)
    shared = [path for path, count in counts.items() if count > 1]
    if shared:
        owners = [image for image in images if os.path.abspath(sidecar(image)) == shared[0]]
        raise UsageError(f"{shared[0]}: {len(owners)} images would share this sidecar ({', '.join(owners[:3])}); "
                         f"{len(shared)} such sidecar(s) in all: rename the images or choose another sidecar name")
    for folder in sorted({os.path.dirname(os.path.abspath(sidecar(image))) for image in images}):
        if not os.access(folder, os.W_OK):
            raise UsageError(f"{folder}: cannot write sidecars into this folder")


def read_txt_tags(path: str) -> list[str]:
    with open(path, encoding="utf-8-sig") as handle:
        return [tag.strip() for tag in handle.read().replace("\n", ",").split(",") if tag.strip()]


def write_txt(image: str, tags: list[str], extension: str, mode: str) -> str:
    """Write one image's txt sidecar; returns what was done: written, kept or appended."""
    path = txt_path(image, extension)
    exists = os.path.exists(path)
    if exists and mode == "keep":
        return "kept"
    if exists and mode == "append":
        old = read_txt_tags(path)
        known = {name_key(tag) for tag in old}
        tags = old + [tag for tag in tags if name_key(tag) not in known]
    write_text(path, TXT_SEPARATOR.join(tags) + "\n")
    return "appended" if exists and mode == "append" else "written"
