"""The names a tag run scores: read from options or files, filtered by --only / --exclude.

Every comparison between names (duplicates, --only, --exclude, --always-first, the cache's own
names) is made on a normalised key, so `golden_retriever`, `Golden Retriever` and
`golden-retriever` are one name: taggers' users keep exclusion lists in whichever spelling
their tool wrote. A name keeps the spelling it was first given in.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from ..errors import UsageError, os_reason

SEPARATORS = re.compile(r"[\s_\-]+")


def name_key(name: str) -> str:
    """The key names are matched on: case folded; runs of spaces, underscores and hyphens as one space."""
    return SEPARATORS.sub(" ", name.casefold()).strip()


def read_names_file(path: str) -> list[str]:
    """One name a line; blank lines and lines starting with # skipped (duplicates kept here)."""
    try:
        with open(path, encoding="utf-8-sig") as handle:
            lines = [line.strip() for line in handle]
    except OSError as err:
        raise UsageError(f"{path}: cannot read the names file ({os_reason(err)})") from err
    return [line for line in lines if line and not line.startswith("#")]


def names_or_file(value: str | None) -> list[str]:
    """`--exclude`/`--only`/`--always-first`: a names file when `value` is one, else "a, b"."""
    if not value:
        return []
    if os.path.isfile(value):
        return read_names_file(value)
    return [part.strip() for part in value.split(",") if part.strip()]


def unique_names(names: list[str]) -> tuple[list[str], list[str]]:
    """(names without repeats, the repeats dropped), repeats judged on `name_key`."""
    kept: dict[str, str] = {}
    repeats = []
    for name in names:
        key = name_key(name)
        if key in kept:
            repeats.append(name)
        else:
            kept[key] = name
    return list(kept.values()), repeats


@dataclass
class Vocabulary:
    """The names scored, in column order, and what was said while choosing them."""

    names: list[str]
    always_first: list[str] = field(default_factory=list)   # present ones lead each image's tags
    notes: list[str] = field(default_factory=list)

    def order(self) -> dict[str, int]:
        """name key -> rank among --always-first (names not listed are absent)."""
        return {name_key(name): rank for rank, name in enumerate(self.always_first)}


def given_names(labels: str | None, labels_file: str | None) -> tuple[list[str], str]:
    """Names from `--labels "a,b"` or `--labels-file`, and where they came from ([] when neither)."""
    if labels and labels_file:
        raise UsageError("give --labels or --labels-file, not both")
    if labels:
        return [part.strip() for part in labels.split(",") if part.strip()], "--labels"
    if labels_file:
        return read_names_file(labels_file), labels_file
    return [], ""


def choose_vocabulary(names: list[str], source: str, only: str | None = None, exclude: str | None = None,
                      always_first: str | None = None) -> Vocabulary:
    """`names` without repeats, kept by --only, dropped by --exclude; one-line notes on repeats and
    on --only/--exclude names that match nothing; an empty result is an error."""
    notes = []
    names, repeats = unique_names(names)
    if repeats:
        notes.append(f"{source}: {len(repeats)} repeated name(s) dropped: {', '.join(repeats[:10])}"
                     + (" ..." if len(repeats) > 10 else ""))
    keys = {name_key(name) for name in names}
    for option, value in (("--only", only), ("--exclude", exclude)):
        wanted = names_or_file(value)
        unmatched = [name for name in wanted if name_key(name) not in keys]
        if unmatched:
            notes.append(f"{option}: {len(unmatched)} name(s) match no label: {', '.join(unmatched[:10])}"
                         + (" ..." if len(unmatched) > 10 else ""))
        chosen = {name_key(name) for name in wanted}
        if option == "--only" and value:
            names = [name for name in names if name_key(name) in chosen]
        elif option == "--exclude":
            names = [name for name in names if name_key(name) not in chosen]
    if not names:
        raise UsageError(f"the vocabulary is empty after --only/--exclude ({source})" if only or exclude
                         else f"the vocabulary is empty ({source or 'no --labels or --labels-file'})")
    first, _ = unique_names(names_or_file(always_first))
    return Vocabulary(names, first, notes)
