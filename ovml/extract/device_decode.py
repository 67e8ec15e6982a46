"""Batches from the decode workers as uint8 pixels on the model's device; with `--decode gpu`,
JPEG bytes are decoded there (nvJPEG through `torchvision.io.decode_jpeg`) and resized with
CLIP's geometry (bicubic with antialiasing, centre crop).

Where GPU decoding cannot run at all (no CUDA device, a torchvision without batched GPU decode,
a failing probe) the run decodes on the CPU (exact) and says so once. A JPEG that the GPU
rejects, or whose decoded image is unusable (not the shape its header gives, or all one value,
or noise like uninitialised memory: what a decoder may hand back for a corrupt JPEG instead of
an error), is decoded by PIL in the main process, so its row is the exact path's, reason
included (a JPEG PIL cannot read either gets ok = false and PIL's reason).
"""
from __future__ import annotations

import functools
import io
import warnings

import torch
from PIL import Image

from .images import DecodedBatch, decode_pixels

MIN_TORCHVISION = (0, 19)   # decode_jpeg takes a list of images (batched nvJPEG) from 0.19
NOISE_ROUGHNESS = 64.0      # mean |difference| of horizontally adjacent pixel values above which a decoded
                            # image is taken for uninitialised memory: random bytes give 85, photos far less
ROUGHNESS_ROW_STEP = 8      # every 8th pixel row is read for that measure


def torchvision_version() -> tuple[int, int]:
    """torchvision's (major, minor); (0, 0) when it cannot be imported."""
    try:
        import torchvision
    except ImportError:
        return (0, 0)
    major, minor = torchvision.__version__.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def decode_jpegs(datas: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """RGB uint8 images (3, H, W) on `device` from JPEG bytes, in one batched call.

    torchvision's CUDA decoder writes its outputs from its own stream without waiting on the
    caller's (torchvision pull request 9606; torchcodec 1634 fixed its copy of it so): memory the
    previous batch's forward and copy back still use, on the current stream, could be handed to
    the decoder and overwritten. So the current stream is finished first (the decode blocks the
    host anyway)."""
    from torchvision.io import ImageReadMode, decode_jpeg
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()
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
        self.cpu_fallbacks = 0                      # JPEGs the device rejected or decoded unusably, decoded by PIL
        self.first_fallback: str | None = None      # why the first of them was not taken from the device

    def __call__(self, batch: DecodedBatch) -> torch.Tensor:
        pixels = batch.pixels.to(self.device, non_blocking=True)                  # (B, 3, S, S)
        if batch.jpeg_index:
            self._decode_jpegs(batch, pixels)
        return pixels

    def _decode_jpegs(self, batch: DecodedBatch, pixels: torch.Tensor) -> None:
        jpegs = batch.jpegs()
        images = self._decode(list(jpegs.values()))
        by_size: dict[tuple, list[int]] = {}
        for index, image, shape in zip(jpegs, images, batch.jpeg_shapes):
            why = None if image is None else self._malformed(image, shape)
            if image is None or why:
                self._decode_on_cpu(batch, pixels, index, jpegs[index], why)
            else:
                by_size.setdefault(tuple(image.shape), []).append(index)
        decoded = dict(zip(jpegs, images))
        for group in by_size.values():                                            # same-sized images at once
            stacked = torch.stack([decoded[i] for i in group])                    # (n, 3, H, W)
            reasons = unwritten_reasons(stacked)
            for index, why in zip(group, reasons):
                if why:
                    self._decode_on_cpu(batch, pixels, index, jpegs[index], why)
            kept = [k for k, why in enumerate(reasons) if not why]
            if kept:
                pixels[[group[k] for k in kept]] = fit(stacked if len(kept) == len(group) else stacked[kept],
                                                       self.side)

    def _malformed(self, image: torch.Tensor, shape: tuple[int, int]) -> str | None:
        """Why a decoded image is not the RGB uint8 (3, H, W) on the device its header promises, or None."""
        expected = (3, *shape)
        if image.dtype != torch.uint8 or tuple(image.shape) != expected or image.device.type != self.device.type:
            return (f"decoded to {tuple(image.shape)} {image.dtype} on {image.device}, "
                    f"not {expected} torch.uint8 (GPU decoder)")
        return None

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

    def _decode_on_cpu(self, batch: DecodedBatch, pixels: torch.Tensor, index: int, data: torch.Tensor,
                       why: str | None = None) -> None:
        """PIL's pixels and reason for one row, in place of the GPU decoder's; `why` the GPU's
        output was not used, when the decoder did not raise (kept for the note)."""
        self.cpu_fallbacks += 1
        self.first_fallback = self.first_fallback or why
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


def unwritten_reasons(images: torch.Tensor) -> list[str | None]:
    """Per decoded image (n, 3, H, W) uint8, why its pixels look like memory the decoder never
    wrote (all one value, or as rough as random bytes), or None; one host sync for the batch."""
    flat = images.amax(dim=(1, 2, 3)) == images.amin(dim=(1, 2, 3))                  # (n,)
    rows = images[:, :, ::ROUGHNESS_ROW_STEP].to(torch.int16)                           # (n, 3, H', W)
    steps = rows.diff(dim=-1).abs_()                                                    # (n, 3, H', W - 1)
    roughness = steps.sum(dim=(1, 2, 3), dtype=torch.float64) / max(1, steps[0].numel())  # (n,)
    reasons = []
    for is_flat, rough in zip(flat.tolist(), roughness.tolist()):
        if is_flat:
            reasons.append("GPU decoder returned an image of one value")
        elif rough > NOISE_ROUGHNESS:
            reasons.append(f"GPU decoder returned noise (mean step {rough:.0f} between neighbouring pixels)")
        else:
            reasons.append(None)
    return reasons
