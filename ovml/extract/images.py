"""Decoding images into CLIP's input tensors, turning every unreadable file into a reason, not a crash."""
from __future__ import annotations

import io
import time
import warnings
from typing import Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

FileCheck = Callable[[bytes], "str | None"]


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode (greyscale, 16-bit, float, CMYK, palette, alpha) as 8-bit RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)                       # (H, W)
        top = values.max() if values.size and values.max() > 0 else 1.0
        image = Image.fromarray((values / top * 255).round().astype(np.uint8), "L")
    if image.mode == "P" or image.mode == "LA" or (image.mode == "RGBA"):
        image = image.convert("RGBA").convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image


def read_image_file(path: str) -> tuple[bytes | None, str]:
    """The bytes of an image file, or (None, reason) when there are none to read."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return None, "missing file"
    except OSError as err:
        return None, f"unreadable file ({err.strerror or err})"
    if not data:
        return None, "empty file (0 bytes)"
    return data, ""


def open_rgb(data: bytes, preprocess: Callable = lambda image: image) -> tuple[object | None, str]:
    """`preprocess` of the 8-bit RGB image encoded in `data` (the image itself by default), or
    (None, reason) for bytes that are not a safely decodable image (decompression bombs included)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()
        return preprocess(to_rgb(image)), ""
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        return None, f"too large to decode safely ({err})".replace("\n", " ")
    except UnidentifiedImageError:
        return None, "not an image file"
    except Exception as err:  # PIL raises many types for corrupt files
        return None, f"not a readable image ({type(err).__name__}: {err})".replace("\n", " ").replace("\t", " ")


def decode(path: str, preprocess: Callable, file_check: FileCheck | None = None) -> tuple[torch.Tensor | None, str]:
    """The preprocessed tensor of one image file, or (None, reason) when it cannot be used."""
    data, reason = read_image_file(path)
    if data is None:
        return None, reason
    if file_check is not None:
        reason = file_check(data)
        if reason:
            return None, reason
    return open_rgb(data, preprocess)


class ImageRows(torch.utils.data.Dataset):
    """Rows of one split as (row, tensor, reason, decode seconds); failed rows give a zero tensor."""

    def __init__(self, paths: list[str], preprocess: Callable, resolution: int,
                 file_check: FileCheck | None = None):
        self.paths = paths
        self.preprocess = preprocess
        self.resolution = resolution
        self.file_check = file_check

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, row: int):
        started = time.perf_counter()
        tensor, reason = decode(self.paths[row], self.preprocess, self.file_check)
        if tensor is None:
            tensor = torch.zeros(3, self.resolution, self.resolution)
        return row, tensor, reason, time.perf_counter() - started
