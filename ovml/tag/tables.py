"""The tables of a tag run: JSON Lines, CSV and Parquet, written one part per unit.

Wide (the default): one row per image with its present labels (best first, --always-first
leading) and their scores. `--long`: one row per (image, label) for every label scored, with
`present`. Both carry the `rule` that decided and a `probability` slot (null until a calibrated
rule fills it). Parquet parts form a dataset folder (`tags.parquet/part-*.parquet`, read as one
table), its schema metadata holding the run's description; JSON Lines and CSV parts are joined into
one file when every unit is done. Every part is written to a temporary file and renamed into
place, so an interrupted run never leaves half a part.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from ..files import replace_atomically

TABLE_FORMATS = ("jsonl", "csv", "parquet")
SCORE_DECIMALS = 6      # JSON Lines scores are rounded to this (float32 carries about 7 digits)
LIST_SEPARATOR = ", "   # wide CSV: a cell's labels and scores, as in txt sidecars
JSONL_ROWS = 65536      # rows turned into Python objects at a time


@dataclass
class TaggedUnit:
    """A unit's decisions, ready to write."""

    index: int
    keys: dict[str, list]              # column -> n values
    names: list[str]                   # (L,) the vocabulary
    scores: np.ndarray                 # (n, L) float32
    present: np.ndarray                # (n, L) bool
    probabilities: np.ndarray | None   # (n, L) from a calibrated rule; None
    rule: str
    order: list[np.ndarray]            # per image: present columns, --always-first first, then best first

    def tags(self, image: int) -> list[str]:
        return [self.names[j] for j in self.order[image]]


def present_order(scores: np.ndarray, present: np.ndarray, first: dict[int, int]) -> list[np.ndarray]:
    """Per image, the present columns: those in `first` (column -> rank) by rank, then by score."""
    ordered = []
    for row_scores, row_present in zip(scores, present):
        columns = np.flatnonzero(row_present)
        columns = columns[np.argsort(-row_scores[columns], kind="stable")]
        if first:
            columns = np.array(sorted(columns, key=lambda j: first.get(int(j), len(first))), dtype=np.int64)
        ordered.append(columns)
    return ordered


def key_fields(keys: dict[str, list]) -> list[pa.Field]:
    return [pa.field(name, pa.int64() if name == "row" else pa.string()) for name in keys]


def wide_table(unit: TaggedUnit) -> pa.Table:
    """One row per image: key columns, labels, scores, probabilities, rule."""
    scores = [unit.scores[i, columns].tolist() for i, columns in enumerate(unit.order)]
    probabilities = (None if unit.probabilities is None else
                     [unit.probabilities[i, columns].tolist() for i, columns in enumerate(unit.order)])
    n = len(unit.order)
    schema = pa.schema(key_fields(unit.keys) + [
        pa.field("labels", pa.list_(pa.string())), pa.field("scores", pa.list_(pa.float32())),
        pa.field("probabilities", pa.list_(pa.float32())), pa.field("rule", pa.string())])
    columns = [*unit.keys.values(), [unit.tags(i) for i in range(n)], scores,
               probabilities if probabilities is not None else [None] * n, [unit.rule] * n]
    return pa.table(columns, schema=schema)


def long_table(unit: TaggedUnit) -> pa.Table:
    """One row per (image, label) for every label: key columns, label, score, present, probability, rule."""
    n, labels = unit.scores.shape
    repeat = np.repeat(np.arange(n), labels)                                   # (n L,) image of each row
    schema = pa.schema(key_fields(unit.keys) + [
        pa.field("label", pa.string()), pa.field("score", pa.float32()), pa.field("present", pa.bool_()),
        pa.field("probability", pa.float32()), pa.field("rule", pa.string())])
    keys = [pa.array(values, type=field.type).take(pa.array(repeat))
            for values, field in zip(unit.keys.values(), key_fields(unit.keys))]
    names = pa.array(unit.names, pa.string()).take(pa.array(np.tile(np.arange(labels), n)))
    probability = (pa.nulls(n * labels, pa.float32()) if unit.probabilities is None
                   else pa.array(unit.probabilities.reshape(-1), pa.float32()))
    return pa.table([*keys, names, pa.array(unit.scores.reshape(-1), pa.float32()),
                     pa.array(unit.present.reshape(-1)), probability,
                     pa.array([unit.rule] * (n * labels), pa.string())], schema=schema)


def rounded(value):
    """A cell with its floats rounded to SCORE_DECIMALS."""
    if isinstance(value, float):
        return round(value, SCORE_DECIMALS)
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def write_jsonl(table: pa.Table, handle) -> None:
    """The table as JSON Lines, a slice of JSONL_ROWS rows at a time (a long table holds a unit
    times the vocabulary)."""
    for batch in table.to_batches(max_chunksize=JSONL_ROWS):
        handle.write("".join(json.dumps({key: rounded(value) for key, value in row.items()}, ensure_ascii=False)
                             + "\n" for row in batch.to_pylist()))


def csv_ready(table: pa.Table) -> pa.Table:
    """List columns (wide labels, scores, probabilities) joined into one text cell each."""
    for index, column in enumerate(table.schema):
        if pa.types.is_list(column.type):
            cells = [None if value is None else LIST_SEPARATOR.join(
                f"{v:.{SCORE_DECIMALS}g}" if isinstance(v, float) else str(v) for v in value)
                for value in table.column(index).to_pylist()]
            table = table.set_column(index, column.name, pa.array(cells, pa.string()))
    return table


def write_part(table: pa.Table, fmt: str, metadata: dict, temporary: str) -> None:
    """One unit's table in `fmt` (parquet, csv or jsonl) at `temporary`."""
    if fmt == "parquet":
        pq.write_table(table.replace_schema_metadata(metadata), temporary)
    elif fmt == "csv":
        pa_csv.write_csv(csv_ready(table), temporary)
    else:
        with open(temporary, "w", encoding="utf-8") as handle:
            write_jsonl(table, handle)


def join_parts(paths: list[str], header: bool, temporary: str) -> None:
    """The parts concatenated at `temporary`, each part's first line (a CSV header) kept once."""
    with open(temporary, "wb") as joined:
        for position, path in enumerate(paths):
            with open(path, "rb") as part:
                if header and position:
                    part.readline()
                shutil.copyfileobj(part, joined)


class TableParts:
    """Writes each unit's tables as parts under the output folder and joins them at the end."""

    def __init__(self, out: str, formats: list[str], long: bool, metadata: dict):
        self.out, self.formats, self.long = out, [f for f in formats if f in TABLE_FORMATS], long
        self.metadata = {b"ovml.tag": json.dumps(metadata, sort_keys=True).encode()}
        self.parts = os.path.join(out, ".ovml-tag", "parts")

    def part(self, fmt: str, index: int) -> str:
        if fmt == "parquet":
            return os.path.join(self.out, "tags.parquet", f"part-{index:06d}.parquet")
        return os.path.join(self.parts, fmt, f"{index:06d}.{fmt}")

    def final(self, fmt: str) -> str:
        return os.path.join(self.out, f"tags.{fmt}")

    def write(self, unit: TaggedUnit) -> None:
        if not self.formats:
            return
        table = long_table(unit) if self.long else wide_table(unit)
        for fmt in self.formats:
            path = self.part(fmt, unit.index)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            replace_atomically(path, functools.partial(write_part, table, fmt, self.metadata))

    def join(self, units: list[int]) -> list[str]:
        """Join the JSON Lines and CSV parts of `units` (in order) into tags.jsonl / tags.csv;
        returns the files the run's tables are in."""
        written = []
        for fmt in self.formats:
            if fmt == "parquet":
                written.append(os.path.join(self.out, "tags.parquet"))
                continue
            parts = [self.part(fmt, index) for index in units]
            replace_atomically(self.final(fmt), functools.partial(join_parts, parts, fmt == "csv"))
            written.append(self.final(fmt))
        return written
