"""CLIP's weights, found and built: the one place a CLIP model is made from a name or a file
(`load_clip`), for the frozen backbone that extraction runs and for the tower fine-tuning trains.

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

import torch

from ...errors import OvmlError


class BackboneError(OvmlError, RuntimeError):
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


def load_clip(model: str, device: torch.device, download_root: str | None = None) -> tuple[torch.nn.Module, str]:
    """The whole CLIP (image and text towers) built from a model name or file, on `device` in eval
    mode with clip's fp16 weights (callers choose the dtype they run in), and its weights' sha256."""
    clip = import_clip()
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackboneError(f"{device} asked for but CUDA is not available on this machine")
    path, sha256 = resolve_weights(model, download_root)
    state = read_state_dict(path)
    try:
        network = clip.model.build_model(dict(state))
    except (KeyError, RuntimeError, ValueError, AssertionError) as err:
        reason = (str(err).splitlines() or [repr(err)])[0]
        raise BackboneError(f"{model}: not a complete CLIP state dict ({type(err).__name__}: {reason})") from err
    return network.to(device).eval(), sha256
