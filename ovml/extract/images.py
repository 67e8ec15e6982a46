"""Decoding images into CLIP's input, turning every unreadable file into a reason, not a crash.

Decode workers produce uint8 pixels (3, S, S) after CLIP's geometry (bicubic resize of the
shorter side to S, centre crop); `normalise` then turns a batch into CLIP's float input on the
model's device. Together they equal clip's own transform bit for bit (ToTensor's /255 and
Normalize are the same element-wise float32 operations), while workers send 4x fewer bytes.

Decode modes (`extract --decode`):
- exact: PIL decodes every pixel (clip's own preprocessing, bit for bit). The default.
- draft: a JPEG at least twice the input size is decoded at 1/2, 1/4 or 1/8 scale in the DCT
  domain (PIL's draft) and then resized from the same source box, so the geometry is the exact
  path's and only the filtering differs (the README gives the feature cosines).
- gpu: JPEG bytes are decoded on the model's GPU (`ovml.extract.device_decode`); every other
  file, and every JPEG the GPU cannot take, is decoded as in exact.
"""
from __future__ import annotations

import functools
import io
import os
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import os_reason

FileCheck = Callable[[bytes], "str | None"]
DECODE_MODES = ("exact", "draft", "gpu")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)   # clip's Normalize, per RGB channel
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
JPEG_END = b"\xff\xd9"


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode (greyscale, 16-bit, float, CMYK, palette, alpha) as 8-bit RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)                       # (H, W)
        top = values.max() if values.size and values.max() > 0 else 1.0
        image = Image.fromarray((values / top * 255).round().astype(np.uint8), "L")
    if image.mode == "P" or image.mode == "LA" or (image.mode == "RGBA"):
        image = image.convert("RGBA").convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image


OUTSIDE_ROOT = "path resolves outside the dataset root (pass --allow-outside-root to read it)"


def inside(path: str, roots: tuple[str, ...]) -> bool:
    """Whether `path`, symlinks followed, lies within one of `roots` (folders given resolved)."""
    real = os.path.realpath(path)
    return any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def read_image_file(path: str, file_check: FileCheck | None = None,
                    roots: tuple[str, ...] | None = None) -> tuple[bytes | None, str]:
    """The file's bytes, or (None, reason) when it is missing, empty, rejected by `file_check`, or
    (with `roots`) resolves outside every one of those folders: a dataset's list must not make
    extraction read files from elsewhere on the machine into a cache that may be shared."""
    if roots is not None and not inside(path, roots):
        return None, OUTSIDE_ROOT
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return None, "missing file"
    except OSError as err:
        return None, f"unreadable file ({os_reason(err)})"
    if not data:
        return None, "empty file (0 bytes)"
    if file_check is not None:
        reason = file_check(data)
        if reason:
            return None, reason
    return data, ""


def open_image(data: bytes) -> Image.Image:
    """A lazily decoded PIL image; decompression bombs raise instead of warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(data))


def unreadable_reason(err: Exception) -> str:
    """The one-line reason recorded for an image PIL could not decode."""
    if isinstance(err, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"too large to decode safely ({err})".replace("\n", " ")
    if isinstance(err, UnidentifiedImageError):
        return "not an image file"
    return f"not a readable image ({type(err).__name__}: {err})".replace("\n", " ").replace("\t", " ")


def open_rgb(data: bytes, preprocess: Callable = lambda image: image) -> tuple[object | None, str]:
    """`preprocess` of the 8-bit RGB image encoded in `data` (the image itself by default), or
    (None, reason) for bytes that are not a safely decodable image (decompression bombs included)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()
        return preprocess(to_rgb(image)), ""
    except Exception as err:  # PIL raises many types for corrupt files
        return None, unreadable_reason(err)


def decode(path: str, preprocess: Callable, file_check: FileCheck | None = None) -> tuple[torch.Tensor | None, str]:
    """The preprocessed tensor of one image file, or (None, reason) when it cannot be used."""
    data, reason = read_image_file(path, file_check)
    if data is None:
        return None, reason
    return open_rgb(data, preprocess)


def resized_size(width: int, height: int, side: int) -> tuple[int, int]:
    """(width, height) with the shorter side scaled to `side`, as torchvision's Resize(side) rounds."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(side * long / short)
    return (side, new_long) if width <= height else (new_long, side)


def centre_crop(image: Image.Image, side: int) -> Image.Image:
    """The central side x side square, at torchvision's CenterCrop offsets."""
    width, height = image.size
    top, left = int(round((height - side) / 2.0)), int(round((width - side) / 2.0))
    return image.crop((left, top, left + side, top + side))


def as_pixels(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a uint8 tensor (3, H, W)."""
    return torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()


def clip_pixels(image: Image.Image, side: int) -> torch.Tensor:
    """CLIP's geometry on a decoded image: bicubic resize of the shorter side, centre crop; uint8 (3, S, S)."""
    image = to_rgb(image)
    target = resized_size(*image.size, side)
    if image.size != target:
        image = image.resize(target, Image.BICUBIC)
    return as_pixels(centre_crop(image, side))


def draft_pixels(data: bytes, side: int) -> torch.Tensor:
    """clip_pixels with the JPEG decoded at the smallest DCT scale (1/2, 1/4, 1/8) that keeps the
    resize target; the resize reads the same source box, so only the filtering differs."""
    image = open_image(data)
    target = resized_size(*image.size, side)
    drafted = image.draft(None, target) if image.format == "JPEG" else None
    if drafted is None or image.size == (drafted[1][2], drafted[1][3]):
        image.load()
        return clip_pixels(image, side)
    image = to_rgb(image)
    return as_pixels(centre_crop(image.resize(target, Image.BICUBIC, box=drafted[1]), side))


def decode_pixels(data: bytes, side: int, draft: bool = False) -> tuple[torch.Tensor | None, str]:
    """uint8 (3, S, S) pixels of an image file's bytes, or (None, reason)."""
    if not draft:
        return open_rgb(data, lambda image: clip_pixels(image, side))
    try:
        return draft_pixels(data, side), ""
    except Exception as err:  # PIL raises many types for corrupt files
        return None, unreadable_reason(err)


@functools.lru_cache(maxsize=None)
def clip_mean_std(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """clip's Normalize mean and std (1, 3, 1, 1) float32 on `device`, made once per device: two
    host-to-device copies per batch would each wait for the device."""
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32, device=device)[None, :, None, None]
    std = torch.tensor(CLIP_STD, dtype=torch.float32, device=device)[None, :, None, None]
    return mean, std


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """CLIP's float input (N, 3, S, S) from uint8 pixels, on the pixels' device: ToTensor's /255,
    then Normalize, as the same float32 operations clip's transform applies."""
    mean, std = clip_mean_std(pixels.device)
    return pixels.float().div(255).sub_(mean).div_(std)


def gpu_jpeg_shape(data: bytes) -> tuple[int, int] | None:
    """(height, width) of a file the GPU JPEG decoder can take: a complete baseline-or-progressive
    JPEG in RGB or greyscale, within PIL's pixel limit (its header read, nothing decoded); None
    for anything else (CMYK, truncated, a PNG), which is decoded on the CPU, so its row is the
    exact path's, reason included."""
    if not data.rstrip(b"\0").endswith(JPEG_END):
        return None
    try:
        image = open_image(data)
    except Exception:
        return None
    return (image.height, image.width) if image.format == "JPEG" and image.mode in ("RGB", "L") else None


@dataclass
class DecodedBatch:
    """A batch from the decode workers: pixels (zeros where a row failed or waits as JPEG bytes),
    the failure reason per row, decode seconds, and in gpu mode the JPEG files left for the device
    decoder, packed into one tensor (one shared-memory block per batch, not one per file), with
    the (height, width) their headers give, so the decoder's output can be checked."""

    rows: torch.Tensor                  # (B,) int64 row numbers in the split
    pixels: torch.Tensor                # (B, 3, S, S) uint8
    reasons: list[str]                  # "" where the row decoded
    seconds: float                      # decode seconds summed over the rows
    jpeg_index: list[int]               # batch positions whose file waits as JPEG bytes
    jpeg_data: torch.Tensor             # those files' bytes one after another, uint8
    jpeg_sizes: list[int]               # and their lengths
    jpeg_shapes: list[tuple[int, int]]  # and their (height, width)

    def jpegs(self) -> dict[int, torch.Tensor]:
        """Batch position -> that file's bytes (a view into `jpeg_data`)."""
        return dict(zip(self.jpeg_index, torch.split(self.jpeg_data, self.jpeg_sizes)))

    def pin_memory(self) -> "DecodedBatch":
        """Called by the DataLoader's pinning thread on CUDA, so the copy to the GPU is asynchronous."""
        self.pixels = self.pixels.pin_memory()
        return self


def collate(items: list[tuple], side: int) -> DecodedBatch:
    """Stack ImageRows items (row, pixels or None, (JPEG bytes, (height, width)) or None, reason, seconds)."""
    rows = torch.tensor([item[0] for item in items], dtype=torch.int64)
    pixels = torch.zeros(len(items), 3, side, side, dtype=torch.uint8)           # (B, 3, S, S)
    for index, item in enumerate(items):
        if item[1] is not None:
            pixels[index] = item[1]
    waiting = [(index, item[2]) for index, item in enumerate(items) if item[2] is not None]
    data = torch.frombuffer(bytearray(b"".join(jpeg for _, (jpeg, _) in waiting)) or bytearray(1), dtype=torch.uint8)
    return DecodedBatch(rows, pixels, [item[3] for item in items], sum(item[4] for item in items),
                        [index for index, _ in waiting], data[:sum(len(jpeg) for _, (jpeg, _) in waiting)],
                        [len(jpeg) for _, (jpeg, _) in waiting], [shape for _, (_, shape) in waiting])


class ImageRows(torch.utils.data.Dataset):
    """Rows of one split as (row, pixels, (JPEG bytes, (height, width)), reason, decode seconds),
    for `collate`.

    exact and draft give pixels; gpu gives the bytes and header shape of GPU-decodable JPEGs
    instead (pixels for every other file). A failed row gives neither, and its reason (its pixels
    stay zero). With `roots`, a path resolving outside them fails (`read_image_file`).
    """

    def __init__(self, paths: list[str], resolution: int, file_check: FileCheck | None = None,
                 mode: str = "exact", roots: tuple[str, ...] | None = None):
        if mode not in DECODE_MODES:
            raise ValueError(f"decode mode must be one of {DECODE_MODES}, not {mode!r}")
        self.paths = paths
        self.resolution = resolution
        self.file_check = file_check
        self.mode = mode
        self.roots = roots

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, row: int):
        started = time.perf_counter()
        data, reason = read_image_file(self.paths[row], self.file_check, self.roots)
        pixels = jpeg = None
        shape = gpu_jpeg_shape(data) if data is not None and self.mode == "gpu" else None
        if shape is not None:
            jpeg = (data, shape)
        elif data is not None:
            pixels, reason = decode_pixels(data, self.resolution, draft=self.mode == "draft")
        return row, pixels, jpeg, reason, time.perf_counter() - started
