"""ovml: open-vocabulary multi-label image classification with CLIP, over a feature cache."""

__version__ = "0.1.0"
