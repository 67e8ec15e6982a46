"""Batches from the decode workers as uint8 pixels on the model's device; with `--decode gpu`,
JPEG bytes are decoded there (nvJPEG through `torchvision.io.decode_jpeg`) and resized with
CLIP's geometry (bicubic with antialiasing, centre crop).

Where GPU decoding cannot run at all (no CUDA device, a torchvision without batched GPU decode,
a failing probe) the run decodes on the CPU (exact) and says so once. A JPEG that the GPU
rejects is decoded by PIL in the main process, so its row is the exact path's, reason included.
"""
from __future__ import annotations

import functools
import io
import warnings

import torch
from PIL import Image

from .images import DecodedBatch, decode_pixels

MIN_TORCHVISION = (0, 19)   # decode_jpeg takes a list of images (batched nvJPEG) from 0.19


def torchvision_version() -> tuple[int, int]:
    """torchvision's (major, minor); (0, 0) when it cannot be imported."""
    try:
        import torchvision
    except ImportError:
        return (0, 0)
    major, minor = torchvision.__version__.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def decode_jpegs(datas: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """RGB uint8 images (3, H, W) on `device` from JPEG bytes, in one batched call."""
    from torchvision.io import ImageReadMode, decode_jpeg
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # torchvision 0.29 deprecates its decoders in favour of TorchCodec
        return decode_jpeg(datas, mode=ImageReadMode.RGB, device=device)


@functools.lru_cache(maxsize=None)
def gpu_decode_unavailable(device: torch.device) -> str | None:
    """Why JPEGs cannot be decoded on `device` (checked once per device), or None when they can."""
    if device.type != "cuda":
        return f"{device} is not a CUDA device"
    version = torchvision_version()
    if version < MIN_TORCHVISION:
        return (f"torchvision {'.'.join(map(str, version))} has no batched GPU JPEG decode "
                f"({'.'.join(map(str, MIN_TORCHVISION))} or later)")
    probe = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 100, 50)).save(probe, format="JPEG")
    try:
        decode_jpegs([torch.frombuffer(bytearray(probe.getvalue()), dtype=torch.uint8)], device)
    except Exception as err:  # a CUDA build without nvJPEG, a driver problem...
        return f"GPU JPEG decode failed on {device} ({type(err).__name__}: {err})".replace("\n", " ")
    return None


def resolve_decode(mode: str, device: torch.device) -> tuple[str, str | None]:
    """The decode mode to run, and a one-line note when it is not the one asked for."""
    if mode != "gpu":
        return mode, None
    why = gpu_decode_unavailable(torch.device(device))
    if why is None:
        return "gpu", None
    return "exact", f"--decode gpu: {why}; decoding on the CPU (exact) instead"


def fit(images: torch.Tensor, side: int) -> torch.Tensor:
    """CLIP's geometry on same-sized uint8 images (n, 3, H, W): bicubic resize of the shorter
    side with antialiasing (torchvision's approximation of PIL's filter), centre crop."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F
    resized = F.resize(images, [side], InterpolationMode.BICUBIC, antialias=True)
    return F.center_crop(resized, [side, side])                                   # (n, 3, S, S)


class DevicePixels:
    """Turns DecodedBatches into uint8 pixels (B, 3, S, S) on the device (non-blocking copies
    from pinned memory on CUDA), decoding the batch's JPEG bytes there in gpu mode."""

    def __init__(self, device: torch.device, side: int):
        self.device, self.side = torch.device(device), side
        self.cpu_fallbacks = 0                      # JPEGs the device rejected, decoded by PIL instead
        self.first_fallback: str | None = None      # why the first of them was rejected

    def __call__(self, batch: DecodedBatch) -> torch.Tensor:
        pixels = batch.pixels.to(self.device, non_blocking=True)                  # (B, 3, S, S)
        if batch.jpeg_index:
            self._decode_jpegs(batch, pixels)
        return pixels

    def _decode_jpegs(self, batch: DecodedBatch, pixels: torch.Tensor) -> None:
        jpegs = batch.jpegs()
        images = self._decode(list(jpegs.values()))
        by_size: dict[tuple, list[int]] = {}
        for index, image in zip(jpegs, images):
            if image is None:
                self._decode_on_cpu(batch, pixels, index, jpegs[index])
            else:
                by_size.setdefault(tuple(image.shape), []).append(index)
        decoded = dict(zip(jpegs, images))
        for group in by_size.values():                                            # same-sized images at once
            pixels[group] = fit(torch.stack([decoded[i] for i in group]), self.side)

    def _decode(self, datas: list[torch.Tensor]) -> list[torch.Tensor | None]:
        """Every image in one call; when that fails, one by one (None where an image fails)."""
        try:
            return decode_jpegs(datas, self.device)
        except Exception:
            pass
        images = []
        for data in datas:
            try:
                images.append(decode_jpegs([data], self.device)[0])
            except Exception as err:
                self.first_fallback = self.first_fallback or f"{type(err).__name__}: {err}".replace("\n", " ")
                images.append(None)
        return images

    def _decode_on_cpu(self, batch: DecodedBatch, pixels: torch.Tensor, index: int, data: torch.Tensor) -> None:
        self.cpu_fallbacks += 1
        decoded, reason = decode_pixels(data.numpy().tobytes(), self.side)
        batch.reasons[index] = reason
        if decoded is not None:
            pixels[index] = decoded.to(self.device)

    def note(self) -> str | None:
        """One line on the JPEGs decoded on the CPU instead, or None."""
        if not self.cpu_fallbacks:
            return None
        return (f"--decode gpu: {self.cpu_fallbacks} JPEG(s) the GPU decoder rejected were decoded on the CPU "
                f"(first: {self.first_fallback})")
