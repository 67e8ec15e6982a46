"""`ovml add-labels`: grow a cache's vocabulary with CLIP's text tower only (no image is re-read).

The slow part (text embeddings) writes nothing. The commit then records an `adding_labels`
journal, grows every label array, writes the new rows and clears the journal; readers that
meet the journal keep the old vocabulary, so an interruption leaves a valid cache; the same
command then rolls the partial commit back and does it again.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass

import numpy as np

from ..cache import store as backends
from ..cache.reader import CacheReader
from ..cache.schema import CacheError
from ..cache.writer import cache_writer_lock
from ..config import AddLabelsConfig
from ..errors import UsageError
from .backbone import load_backbone
from .backbone.weights import resolve_weights
from .text import DEFAULT_PROMPTS, embed_labels

JOURNAL = "adding_labels"
WRITE_ENTRIES = 1 << 24  # label entries per write of new columns (16 MB of int8)


@dataclass(frozen=True)
class AnnotatedRows:
    """One split's annotated rows, kept sparse so that memory follows the positives, not rows x
    new labels: every new label of an annotated row is -1 except its positives; other rows get 0."""
    rows: np.ndarray          # (n,) ascending row indices
    offsets: np.ndarray       # (n + 1,) row i's positives are columns[offsets[i]:offsets[i + 1]]
    columns: np.ndarray       # (positives,) new-label columns

    @classmethod
    def from_lists(cls, rows: list[int], positives: list[np.ndarray]) -> "AnnotatedRows":
        counts = np.array([len(p) for p in positives], dtype=np.int64)
        columns = np.concatenate(positives) if positives else np.zeros(0)
        return cls(np.asarray(rows, dtype=np.int64), np.concatenate([[0], np.cumsum(counts)]),
                   columns.astype(np.int64))

    def block(self, start: int, stop: int, width: int) -> np.ndarray:
        """Rows start..stop of the new columns as int8, (stop - start, width)."""
        values = np.zeros((stop - start, width), dtype=np.int8)
        first, last = np.searchsorted(self.rows, [start, stop])
        inside = self.rows[first:last] - start
        values[inside] = -1
        per_row = np.diff(self.offsets[first:last + 1])
        values[np.repeat(inside, per_row), self.columns[self.offsets[first]:self.offsets[last]]] = 1
        return values


@dataclass(frozen=True)
class NewLabels:
    names: list[str]
    text: np.ndarray          # (k, D)
    seen: bool
    annotations: dict         # split -> AnnotatedRows


def read_names(path: str, existing: set[str]) -> list[str]:
    """One new label per line; blank lines and `#` comments skipped; no repeats, none existing."""
    names: list[str] = []
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, 1):
            name = line.strip()
            if not name or name.startswith("#"):
                continue
            if name in existing:
                raise UsageError(f"{path}:{number}: label {name!r} is already in the cache")
            if name in names:
                raise UsageError(f"{path}:{number}: label {name!r} listed twice")
            names.append(name)
    if not names:
        raise UsageError(f"{path}: no label names")
    return names


def annotation_lines(path: str, keys: tuple[str, ...] = ("id",)) -> tuple[str, list[tuple[int, str, list[str]]]]:
    """A `KEY,labels` CSV (KEY the first of `keys` present; labels joined by `;`): the key column and,
    per row, (line number, key, label names)."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = csv.DictReader(handle)
        key = next((name for name in keys if name in (rows.fieldnames or [])), None)
        if key is None or "labels" not in (rows.fieldnames or []):
            raise UsageError(f"{path}:1: needs the columns {'|'.join(keys)},labels")
        return key, [(rows.line_num, row[key].strip(),
                      list(filter(None, (n.strip() for n in (row["labels"] or "").split(";"))))) for row in rows]


def read_annotations(path: str, names: list[str], reader: CacheReader) -> dict[str, AnnotatedRows]:
    """`id,labels` CSV (labels joined by `;`): listed images get +1/-1 on the new labels; others 0."""
    column = {name: j for j, name in enumerate(names)}
    wanted: dict[str, np.ndarray] = {}   # image id -> its positive columns
    for line, image, labels in annotation_lines(path)[1]:
        unknown = [name for name in labels if name not in column]
        if unknown:
            raise UsageError(f"{path}:{line}: {unknown[0]!r} is not one of the new labels")
        wanted[image] = np.array(sorted({column[name] for name in labels}), dtype=np.int32)
    found: dict[str, AnnotatedRows] = {}
    for split in reader.splits:
        ids = reader.image_ids(split)
        hits = [i for i, image in enumerate(ids) if image in wanted]
        if hits:
            found[split] = AnnotatedRows.from_lists(hits, [wanted[ids[i]] for i in hits])
    return found


def check_same_model(reader: CacheReader, model: str, download_root: str | None) -> None:
    """The text tower must come from the CLIP that made the cache (same weights sha256)."""
    _, sha256 = resolve_weights(model, download_root)
    if sha256 != reader.backbone.get("weights_sha256"):
        raise UsageError(f"{model}: not the weights that made {reader.path} "
                         f"(sha256 {sha256[:12]}... vs {str(reader.backbone.get('weights_sha256'))[:12]}...)")


def prepare(config: AddLabelsConfig) -> tuple[NewLabels, int]:
    """Everything slow: read and embed the new names. Writes nothing."""
    with CacheReader(config.cache) as reader:
        names = read_names(config.names_file, set(reader.ids) | set(reader.names))
        model = config.model or reader.backbone.get("name")
        check_same_model(reader, model, config.download_root)
        backbone = load_backbone(model, config.device, config.download_root)
        text = embed_labels(backbone.model, names, reader.prompts or list(DEFAULT_PROMPTS), backbone.device,
                            progress=config.progress)
        found = read_annotations(config.annotations, names, reader) if config.annotations else {}
        return NewLabels(names, text, not config.unseen, found), reader.num_labels


def write_new_columns(matrix, old_count: int, annotations: AnnotatedRows | None) -> None:
    """Write a split's new label columns (0, or the annotated values) a few chunks of rows at a
    time, so memory stays bounded whatever rows x new labels; every new entry is written, so no
    value left in a chunk by an interrupted earlier commit survives."""
    rows, count = matrix.shape
    added = count - old_count
    annotations = annotations or AnnotatedRows.from_lists([], [])
    step = max(1, WRITE_ENTRIES // (added * matrix.chunks[0])) * matrix.chunks[0]
    for start in range(0, rows, step):
        stop = min(start + step, rows)
        matrix[start:stop, old_count:count] = annotations.block(start, stop, added)   # (rows, new labels)


def commit(cache: str, new: NewLabels, old_count: int) -> None:
    """Grow the arrays under a journal; readers see the old vocabulary until it is cleared."""
    store = backends.open_store(cache, "a")
    try:
        count = old_count + len(new.names)
        store.set_attr(JOURNAL, {"from": old_count, "to": count})
        store.flush()
        for key, values in (("labels/names", new.names), ("labels/ids", new.names)):
            store.resize(key, (count,))
            store.array(key)[old_count:count] = np.array(values, dtype=object)
        store.resize("labels/seen", (count,))
        store.array("labels/seen")[old_count:count] = new.seen
        store.resize("labels/text", (count, new.text.shape[1]))
        store.array("labels/text")[old_count:count] = new.text
        for split in store.children("splits"):
            rows = store.array(f"splits/{split}/labels").shape[0]
            store.resize(f"splits/{split}/labels", (rows, count))
            write_new_columns(store.array(f"splits/{split}/labels"), old_count, new.annotations.get(split))
        store.flush()
        store.set_attr(JOURNAL, None)
        store.flush()
    finally:
        store.close()


def roll_back_interrupted(cache: str) -> bool:
    """Undo a commit that was interrupted (shrink every label array back); True if there was one."""
    store = backends.open_store(cache, "a")
    try:
        journal = store.get_attr(JOURNAL)
        if not journal:
            return False
        old = journal["from"]
        for key in ("labels/names", "labels/ids", "labels/seen"):
            store.resize(key, (old,))
        store.resize("labels/text", (old, store.array("labels/text").shape[1]))
        for split in store.children("splits"):
            store.resize(f"splits/{split}/labels", (store.array(f"splits/{split}/labels").shape[0], old))
        store.set_attr(JOURNAL, None)
        store.flush()
        return True
    finally:
        store.close()


def add_labels(config: AddLabelsConfig) -> list[str]:
    """Append the labels of `config.names_file` to the cache, holding its writer lock (as
    `extract` does); returns the names added."""
    if not backends.exists(config.cache):
        raise CacheError(f"{config.cache}: no cache here")
    with cache_writer_lock(config.cache, config.lock):
        roll_back_interrupted(config.cache)
        new, old_count = prepare(config)
        commit(config.cache, new, old_count)
    return new.names
