"""Attention maps drawn over the image (the paper's Figure 3)."""
from __future__ import annotations

import numpy as np
from PIL import Image

from ..extract.images import to_rgb


def center_square(picture: Image.Image, size: int) -> np.ndarray:
    """The image as CLIP sees it: shorter side resized to `size`, centre-cropped; (size, size, 3) uint8."""
    image = to_rgb(picture)
    scale = size / min(image.size)
    image = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))),
                         Image.BICUBIC)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)))


def draw_attention(picture: Image.Image, size: int, labels: list[tuple[str, float]], maps: np.ndarray,
                   out: str) -> None:
    """Save a row of panels: the image, then one overlay per label (maps: (k, H, W))."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    picture = center_square(picture, size)
    figure, axes = plt.subplots(1, len(labels) + 1, figsize=(2.6 * (len(labels) + 1), 2.8))
    axes[0].imshow(picture)
    axes[0].set_title("image", fontsize=8)
    for axis, (name, score), attention in zip(axes[1:], labels, maps):
        axis.imshow(picture)
        axis.imshow(attention, cmap="jet", alpha=0.45, extent=(0, size, size, 0), interpolation="bilinear")
        axis.set_title(f"{name} {score:.3f}", fontsize=8)
    for axis in axes:
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)
