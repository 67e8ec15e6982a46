"""The frozen CLIP image tower: X' (the tokens entering CLIP's pool) and CLIP's global embedding
in one pass. One loader for both backbone families: `Backbone` here is the ResNet (X' enters the
attention pool), `vit.VitBackbone` the Vision Transformer (X' and the class token enter the last
residual block); both answer the same interface.

Models load by name through clip's own download (sha256-checked, `download_root` or
`$OVML_CLIP_CACHE`) or from a local file: a TorchScript archive (as OpenAI publishes) or a plain
state dict. Either way the state dict defines the architecture via `clip.model.build_model`.
"""
from __future__ import annotations

import hashlib
import os
import sys
import types
import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch


class BackboneError(RuntimeError):
    """A model that cannot be loaded or used; the message says which and why."""


def import_clip():
    """Import clip-anytorch, shimming `pkg_resources` where setuptools no longer ships it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pkg_resources  # noqa: F401  (clip imports it)
    except ImportError:
        import packaging.version
        shim = types.ModuleType("pkg_resources")
        shim.packaging = sys.modules.setdefault("packaging", __import__("packaging"))
        shim.packaging.version = packaging.version
        sys.modules["pkg_resources"] = shim
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import clip
        import clip.model
    return clip


def file_sha256(path: str) -> str:
    """The sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def clip_cache_dir(download_root: str | None = None) -> str:
    """Where named models are downloaded: the argument, `$OVML_CLIP_CACHE`, or clip's default."""
    return download_root or os.environ.get("OVML_CLIP_CACHE") or os.path.expanduser("~/.cache/clip")


def resolve_weights(model: str, download_root: str | None = None) -> tuple[str, str]:
    """Map a model name or file to (local file, sha256). Names download with clip's sha256 check."""
    clip = import_clip()
    known = clip.clip._MODELS
    if model in known:
        url = known[model]
        try:
            path = clip.clip._download(url, clip_cache_dir(download_root))
        except Exception as err:
            raise BackboneError(f"cannot download CLIP {model} ({err}); put the weights file in "
                                f"{clip_cache_dir(download_root)} or pass --model FILE") from err
        return path, url.split("/")[-2]
    if os.path.isfile(model):
        return model, file_sha256(model)
    raise BackboneError(f"{model}: neither a CLIP model name ({', '.join(known)}) nor a file")


def read_state_dict(path: str) -> dict:
    """The state dict of a TorchScript archive or of a plain (weights-only) state-dict file.

    `clip.load` cannot read a plain state dict: it tries TorchScript first and leaves the file at
    EOF, so both cases are handled here.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            archive = torch.jit.load(path, map_location="cpu")
        return {key: value for key, value in archive.state_dict().items()}
    except RuntimeError:
        pass
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise BackboneError(f"{path}: not a TorchScript archive nor a weights-only state dict ({err})") from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not ({"visual.attnpool.positional_embedding", "visual.proj"} & set(state)):
        raise BackboneError(f"{path}: not a CLIP state dict (neither a ResNet's visual.attnpool nor a "
                            "Vision Transformer's visual.proj)")
    return state


@dataclass
class Backbone:
    """A loaded CLIP ResNet with what the cache needs to know about it (the interface both
    families answer: `kind`, the shapes, `describe`, `pool_weights`, `encode`)."""

    kind: ClassVar[str] = "resnet"

    model: torch.nn.Module    # the whole CLIP (image and text towers), eval mode
    name: str                 # the model name or the file it came from
    sha256: str               # sha256 of the weights file
    device: torch.device
    preprocess: object        # CLIP's image transform (PIL image -> normalised tensor)

    @property
    def visual(self) -> torch.nn.Module:
        return self.model.visual

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    @property
    def input_resolution(self) -> int:
        return int(self.visual.input_resolution)

    @property
    def grid(self) -> tuple[int, int]:
        side = round((self.visual.attnpool.positional_embedding.shape[0] - 1) ** 0.5)
        return side, side

    @property
    def channels(self) -> int:
        return int(self.visual.attnpool.positional_embedding.shape[1])

    @property
    def embed_dim(self) -> int:
        return int(self.visual.attnpool.c_proj.weight.shape[0])

    @property
    def num_heads(self) -> int:
        return int(self.visual.attnpool.num_heads)

    def describe(self) -> dict:
        """The cache's `backbone` root attribute."""
        return {"name": self.name, "kind": self.kind, "weights_sha256": self.sha256,
                "input_resolution": self.input_resolution, "grid": list(self.grid),
                "channels": self.channels, "embed_dim": self.embed_dim, "feature_dtype": "float16"}

    def pool_weights(self) -> dict[str, np.ndarray]:
        """CLIP's attention-pool weights as float32 arrays, named as in `pool/*`."""
        pool = self.visual.attnpool
        arrays = {"positional_embedding": pool.positional_embedding}
        for short, layer in (("q", pool.q_proj), ("k", pool.k_proj), ("v", pool.v_proj), ("c", pool.c_proj)):
            arrays[f"{short}_weight"] = layer.weight
            arrays[f"{short}_bias"] = layer.bias
        return {key: value.detach().float().cpu().numpy() for key, value in arrays.items()}

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """X' tokens (N, HW, C) and CLIP's global embedding (N, D) from one forward pass.

        The tokens are what a head reads (a ViT's begin with its class token)."""
        visual = self.visual
        x = images.to(self.device, non_blocking=True).type(self.dtype)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        x = visual.relu1(visual.bn1(visual.conv1(x)))
        x = visual.relu2(visual.bn2(visual.conv2(x)))
        x = visual.relu3(visual.bn3(visual.conv3(x)))
        x = visual.avgpool(x)
        x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))  # (N, C, H, W)
        global_embedding = visual.attnpool(x)                               # (N, D)
        spatial = x.flatten(2).permute(0, 2, 1)                              # (N, HW, C)
        return spatial, global_embedding


def load_backbone(model: str = "RN50", device: torch.device | str = "cpu",
                  download_root: str | None = None) -> Backbone:
    """Load a CLIP ResNet or ViT by name or file onto `device` (fp16 on CUDA as clip does, fp32 on CPU)."""
    clip = import_clip()
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackboneError(f"{device} asked for but CUDA is not available on this machine")
    path, sha256 = resolve_weights(model, download_root)
    state = read_state_dict(path)
    try:
        network = clip.model.build_model(dict(state)).to(device)
    except (KeyError, RuntimeError, ValueError, AssertionError) as err:
        reason = (str(err).splitlines() or [repr(err)])[0]
        raise BackboneError(f"{model}: not a complete CLIP state dict ({type(err).__name__}: {reason})") from err
    if device.type != "cuda":
        network.float()
    if device.type == "cuda":
        network.visual.to(memory_format=torch.channels_last)
    network.eval()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    preprocess = clip.clip._transform(network.visual.input_resolution)
    from .vit import VitBackbone  # the ViT family builds on this module's interface
    family = VitBackbone if "visual.proj" in state else Backbone
    return family(network, model, sha256, device, preprocess)
