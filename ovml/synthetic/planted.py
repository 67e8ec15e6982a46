"""The planted world (docs/method.md): a synthetic MLZSL problem written as a regular cache.

Labels live in a low-rank text space (so seen labels teach about unseen ones); images are grids
of tokens holding one big object and a few small ones, each adding its class's planted visual
direction to its cells. CLIP's pool in this world averages everything, so small objects are
diluted in `global`: a head that attends per class must beat CLIP-ML on unseen labels.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..cache.pooling import resnet_pool_global
from ..cache.schema import UNSEEN_ON_TRAINING
from ..cache.writer import CachePlan, LabelTable, UnitRows, create_cache, mark_complete, write_unit
from ..progress import progress as progress_bar
from .vit import planted_vit_pool, vit_rows


@dataclass(frozen=True)
class PlantedWorld:
    """Every knob of the generator; the same settings and seed give the same bytes."""

    seen: int = 40                    # S seen labels
    unseen: int = 10                  # U unseen labels
    rank: int = 16                    # r, rank of the latent text structure (r < S)
    embed_dim: int = 64               # D
    channels: int = 128               # C
    grid: int = 7                     # H = W
    num_heads: int = 4                # heads of the planted attention pool
    train_images: int = 4000
    test_images: int = 1000
    noise: float = 0.3                # std of per-token background noise in C
    clutter: float = 0.6              # std of per-token clutter P w, w in D
    big_cells: tuple = (12, 24)       # cells of the one big object (inclusive range)
    small_objects: tuple = (1, 3)     # how many small objects
    small_cells: tuple = (1, 2)       # cells of each small object
    amplitude: tuple = (0.8, 1.2)     # an object adds amp * 2 * P t_j to its cells
    big_objects: int = 1              # big objects per image (drawn, like the small ones, from object labels)
    scene_fraction: float = 0.0       # share of the labels that are scenes: weak, on most cells
    scenes_per_image: tuple = (1, 2)  # scenes present per image (in a world that has scene labels)
    scene_cover: tuple = (0.5, 0.9)   # fraction of the cells a scene covers
    scene_amplitude: tuple = (0.2, 0.35)  # a scene adds amp * 2 * P t_j to its cells
    kind_signal: float = 2.0          # latent coordinate z_j[0] = +s for objects, -s for scenes (with
                                      # scene labels only): a label's kind is readable from its text
    scatter_unseen: bool = False      # unseen columns at seeded random places instead of the last U
    positional_std: float = 0.05      # std of the pool's positional embedding
    unit_rows: int = 64               # rows per chunk / work unit
    seed: int = 0
    backbone_kind: str = "resnet"     # "vit": CLIP's tail is a ViT's last block (synthetic/vit.py)
    class_token_weight: float = 1.0   # vit: |cls| entering the last block, in units of a LayerNorm'd token


# Named world shapes (experiment E1 in docs/benchmarks.md runs them all; `ovml demo` shows "mixed").
# Unseen columns are scattered among the seen ones; 3,000 training and 1,000 test images.
WORLDS = {
    # objects only: one big object and 1-3 small ones per image (dense CLIP's home ground)
    "objects": PlantedWorld(seen=60, unseen=15, train_images=3000, test_images=1000, scatter_unseen=True),
    # half scenes (weak, on most cells: CLIP's global feature finds them), half small objects
    # (strong, on 1-3 cells: dense CLIP finds them); neither baseline serves both kinds
    "mixed": PlantedWorld(seen=48, unseen=12, train_images=3000, test_images=1000, scatter_unseen=True,
                          big_objects=0, scene_fraction=0.5, small_cells=(1, 3)),
    # another shape: 150 labels, 30% scenes, wider features (C = 256, D = 96), 8 x 8 grid, 8 pool heads
    "wide": PlantedWorld(seen=120, unseen=30, train_images=3000, test_images=1000, scatter_unseen=True,
                         channels=256, embed_dim=96, rank=24, grid=8, num_heads=8, scene_fraction=0.3,
                         big_cells=(8, 16)),
}


def text_embeddings(world: PlantedWorld, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(L, D) t_j = normalise(z_j B), low-rank and L2-normalised, and which labels are scenes (L,).

    In a world with scene labels the first latent coordinate carries the kind (+s object,
    -s scene), so what is learnt about kinds on seen labels transfers to unseen ones.
    """
    labels = world.seen + world.unseen
    latent = rng.standard_normal((labels, world.rank))                        # (L, r)
    basis = rng.standard_normal((world.rank, world.embed_dim))                # (r, D)
    is_scene = np.zeros(labels, dtype=bool)
    if world.scene_fraction > 0:
        is_scene[rng.permutation(labels)[:round(labels * world.scene_fraction)]] = True
        latent[:, 0] = np.where(is_scene, -world.kind_signal, world.kind_signal)
    text = latent @ basis
    return text / np.linalg.norm(text, axis=1, keepdims=True), is_scene


def seen_columns(world: PlantedWorld, rng: np.random.Generator) -> np.ndarray:
    """(L,) bool: the first S labels, or S labels at seeded random places (`scatter_unseen`)."""
    labels = world.seen + world.unseen
    if not world.scatter_unseen:
        return np.arange(labels) < world.seen
    seen = np.zeros(labels, dtype=bool)
    seen[rng.permutation(labels)[:world.seen]] = True
    return seen


def planted_pool(world: PlantedWorld, rng: np.random.Generator) -> tuple[dict, np.ndarray]:
    """CLIP-like pool weights (q = k = v = identity, c_proj = P^T) and the visual map P (C, D)."""
    gaussian = rng.standard_normal((world.channels, world.embed_dim))
    visual_map, _ = np.linalg.qr(gaussian)                                    # (C, D) orthonormal columns
    c, d, hw = world.channels, world.embed_dim, world.grid ** 2
    identity = np.eye(c)
    pool = {"positional_embedding": rng.normal(0, world.positional_std, (hw + 1, c)),
            "q_weight": identity, "k_weight": identity, "v_weight": identity,
            "q_bias": np.zeros(c), "k_bias": np.zeros(c), "v_bias": np.zeros(c),
            "c_weight": visual_map.T, "c_bias": np.zeros(d)}
    return {k: v.astype(np.float32) for k, v in pool.items()}, visual_map


def attention_pool(tokens: np.ndarray, pool: dict, heads: int) -> np.ndarray:
    """CLIP's attention pool applied to tokens (N, HW, C) -> (N, D) (float32, as CLIP computes it)."""
    as_tensors = {key: torch.from_numpy(value).float() for key, value in pool.items()}
    return resnet_pool_global(torch.from_numpy(tokens).float(), as_tensors, heads).numpy()


def draw_images(world: PlantedWorld, count: int, text: np.ndarray, is_scene: np.ndarray,
                visual_map: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Tokens (n, HW, C) and the presence matrix (n, L) bool of `count` images.

    Objects (big ones of `big_cells`, small ones of `small_cells`) add a strong signal to few
    cells; scenes add a weak one to most cells.
    """
    hw, labels = world.grid ** 2, len(text)
    objects, scenes = np.flatnonzero(~is_scene), np.flatnonzero(is_scene)
    directions = 2.0 * text @ visual_map.T                                    # (L, C): 2 P t_j
    clutter = rng.normal(0, world.clutter, (count, hw, world.embed_dim)) @ visual_map.T
    tokens = rng.normal(0, world.noise, (count, hw, world.channels)) + clutter  # (n, HW, C)
    present = np.zeros((count, labels), dtype=bool)
    for image in range(count):
        smalls = rng.integers(world.small_objects[0], world.small_objects[1] + 1)
        classes = rng.choice(objects, size=world.big_objects + smalls, replace=False)
        sizes = [rng.integers(world.big_cells[0], world.big_cells[1] + 1) for _ in range(world.big_objects)]
        sizes += list(rng.integers(world.small_cells[0], world.small_cells[1] + 1, size=smalls))
        cells = rng.permutation(hw)
        start = 0
        for label, size in zip(classes, sizes):
            amplitude = rng.uniform(*world.amplitude)
            tokens[image, cells[start:start + size]] += amplitude * directions[label]
            start += size
        present[image, classes] = True
        if len(scenes):
            present[image] |= add_scenes(world, tokens[image], scenes, directions, rng)
    return tokens, present


def add_scenes(world: PlantedWorld, tokens: np.ndarray, scenes: np.ndarray, directions: np.ndarray,
               rng: np.random.Generator) -> np.ndarray:
    """Add the scenes of one image to its tokens (HW, C) in place; returns its (L,) scene presence."""
    hw = len(tokens)
    count = rng.integers(world.scenes_per_image[0], world.scenes_per_image[1] + 1)
    present = np.zeros(len(directions), dtype=bool)
    for label in rng.choice(scenes, size=min(count, len(scenes)), replace=False):
        cells = rng.permutation(hw)[:max(1, round(rng.uniform(*world.scene_cover) * hw))]
        tokens[cells] += rng.uniform(*world.scene_amplitude) * directions[label]
        present[label] = True
    return present


def label_rows(present: np.ndarray, annotated: np.ndarray) -> np.ndarray:
    """±1 on annotated columns, 0 elsewhere."""
    rows = np.where(present, 1, -1).astype(np.int8)
    rows[:, ~annotated] = 0
    return rows


def write_planted_world(path: str, world: PlantedWorld = PlantedWorld(), progress: bool = False) -> str:
    """Generate the world and write it as a complete schema-v1 cache at `path` (.zarr or .h5)."""
    streams = np.random.SeedSequence(world.seed).spawn(3)
    structure = np.random.default_rng(streams[0])
    text, is_scene = text_embeddings(world, structure)
    vit = world.backbone_kind == "vit"
    pool, visual_map = (planted_vit_pool if vit else planted_pool)(world, structure)
    seen = seen_columns(world, structure)
    kinds = ["scene" if scene else "object" for scene in is_scene]
    names = [(f"{kind}_" if is_scene.any() else "") + f"{'seen' if s else 'unseen'}_{j:03d}"
             for j, (s, kind) in enumerate(zip(seen, kinds))]
    settings = asdict(world)
    digest = hashlib.sha256(repr(sorted(settings.items())).encode()).hexdigest()
    backbone = {"name": "planted-world", "weights_sha256": digest, "input_resolution": 0,
                "kind": world.backbone_kind, "grid": [world.grid, world.grid], "channels": world.channels,
                "embed_dim": world.embed_dim, "feature_dtype": "float16"}
    splits = {"train": world.train_images, "test": world.test_images}
    dataset = {"name": "planted", "root": "synthetic", "settings": settings, "label_kinds": kinds,
               "unseen_labels_on_training_split": {"split": "train", "value": UNSEEN_ON_TRAINING}}
    plan = CachePlan(backbone, dataset,
                     ["{}"], LabelTable(names, names, seen, text.astype(np.float32)), pool,
                     world.num_heads, splits, world.unit_rows)
    store = create_cache(path, plan)
    annotated = {"train": seen, "test": np.ones_like(seen)}
    for (split, count), stream in zip(splits.items(), streams[1:]):
        rng = np.random.default_rng(stream)
        for unit, start in enumerate(progress_bar(range(0, count, world.unit_rows), desc=f"planted {split}",
                                                  unit="unit", enabled=progress)):
            rows = min(world.unit_rows, count - start)
            tokens, present = draw_images(world, rows, text, is_scene, visual_map, rng)
            if vit:
                spatial, global_embedding = vit_rows(world, tokens, pool)
            else:
                spatial = tokens.astype(np.float16)
                global_embedding = attention_pool(spatial.astype(np.float32), pool, world.num_heads)
            write_unit(store, split, unit, world.unit_rows,
                       UnitRows(spatial, global_embedding.astype(np.float16),
                                label_rows(present, annotated[split]),
                                [f"{split}/{start + i:06d}" for i in range(rows)], np.ones(rows, dtype=bool)))
    mark_complete(store)
    store.close()
    return path
