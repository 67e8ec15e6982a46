"""Trainable heads over cached CLIP features, the training-free scorers and the losses.

Importing the package registers every head (`registry.HEADS`): a new head is one module whose
class subclasses `base.Head`, is decorated with `registry.register`, and is imported here.
"""
from . import attention, attention_vit, biam, lesa, linear, zssdl  # noqa: F401  (registration)
from .base import Head
from .registry import HEADS, VIT_HEADS, build_head, register

__all__ = ["HEADS", "VIT_HEADS", "Head", "build_head", "register"]
