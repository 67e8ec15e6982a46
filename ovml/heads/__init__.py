"""Trainable heads over cached X' (the OVML attention head, a linear baseline), the
training-free scorers and the losses."""
from . import attention, linear  # noqa: F401  (registers the heads)
from .registry import HEADS, build_head, register

__all__ = ["HEADS", "build_head", "register"]
