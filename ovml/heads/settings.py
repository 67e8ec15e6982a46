"""The OVML head's settings per backbone kind: TrainConfig's head fields resolved for a cache's
backbone (None takes the kind's default), the values a ViT head has no form for refused, and the
options the head is built with (recorded in a run's config.json, so the run's head is rebuilt
from them over the cache's pool)."""
from __future__ import annotations

from ..config import TrainConfig
from ..errors import UsageError
from .attention_vit import DEFAULT_OUTPUT as DEFAULT_VIT_OUTPUT
from .attention_vit import PINV_REFUSAL

# The OVML head's settings where TrainConfig leaves them None, per backbone kind (measured on the
# planted worlds: README "Training defaults"; the ViT head attends with CLIP's own heads and one
# softmax, as README "Vision Transformers" measured it).
BACKBONE_DEFAULTS = {
    "resnet": {"q_init": "dense", "attention_scales": (1.0, 64.0), "attention_top_k": 3,
               "frozen": ("v_proj", "c_proj"), "attention_heads": 1},
    "vit": {"q_init": "random", "attention_scales": (), "attention_top_k": 0, "frozen": (),
            "attention_heads": "pool"},
}
VIT_REFUSALS = {
    "q_init": "--q-init {value} has no Vision Transformer form (the ViT's output passes ln_post, a "
              "LayerNorm, which no linear map inverts); use --q-init random",
    "attention_scales": "--attention-scales applies to the ResNet head; the ViT head attends with one softmax",
    "attention_top_k": "--attention-top-k applies to the ResNet head; the ViT head attends with one softmax",
    "attention_heads": "--attention-heads applies to the ResNet head; the ViT head uses CLIP's own heads",
}


def head_settings(config: TrainConfig, kind: str) -> dict:
    """The OVML head's settings for a cache of backbone `kind`: config's values, None taking the
    kind's default; values a ViT head has no form for are refused (UsageError)."""
    settings = {key: default if getattr(config, key) is None else getattr(config, key)
                for key, default in BACKBONE_DEFAULTS[kind].items()}
    if kind == "vit" and config.head == "ovml":
        if settings["q_init"] == "pinv":
            raise UsageError(PINV_REFUSAL)
        for key, refusal in VIT_REFUSALS.items():
            value = tuple(settings[key]) if key == "attention_scales" else settings[key]
            if value != BACKBONE_DEFAULTS["vit"][key]:
                raise UsageError(f"{config.cache}: " + refusal.format(value=settings[key]))
    return settings


def head_options(config: TrainConfig, kind: str, settings: dict) -> dict:
    """The options a head is built with (recorded in config.json to rebuild it later), for a
    cache of backbone `kind` and the OVML head's resolved `settings` (`head_settings`);
    --vit-output on a ResNet cache is refused."""
    if kind != "vit" and config.vit_output is not None:
        raise UsageError(f"{config.cache}: --vit-output applies to Vision Transformer caches; this one "
                         "holds a ResNet's features")
    if config.head != "ovml":
        return {}
    if kind == "vit":
        return {"q_init": settings["q_init"], "vit_output": config.vit_output or DEFAULT_VIT_OUTPUT}
    heads = settings["attention_heads"]
    return {"q_init": settings["q_init"], "attention_scales": list(settings["attention_scales"]),
            "attention_top_k": settings["attention_top_k"], "attention_heads": None if heads == "pool" else heads}
