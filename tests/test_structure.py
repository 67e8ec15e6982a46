"""The house's shape, checked from the source alone (no ovml module is imported).

- Imports between ovml modules form no cycle, and no module imports from a layer above its own
  (the layer table below is docs/architecture.md's "Rooms" table as data).
- No module under ovml/ is longer than MAX_LINES.
- No file tracked by git points outside the repository: no path into a folder beside the
  checkout, no absolute home or machine path, no id of a tracker the repository does not hold.

Imports are read with `ast`, relative ones resolved against the module's package. Every import
counts, at module level or inside a function (a lazy import is still a dependency), except those
under `if TYPE_CHECKING:`, which never run. `from package import name` depends on the module
`package.name` when that is a module, else on `package` itself.
"""
from __future__ import annotations

import ast
import os
import re
import subprocess

import pytest

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "ovml"
MAX_LINES = 400

# Layers, lowest first: a module may import from its own layer or lower ones. Keys are the first
# name under ovml (a module or a package); the package's own __init__ ("ovml") is a face.
# tag, calibrate and export are placed ahead of time: the check skips rooms that do not exist yet.
LAYERS = {
    "errors": 0, "config": 0, "progress": 0, "precision": 0, "locate": 0, "files": 0, "lock": 0,
    "cache": 1, "metrics": 1,
    "extract": 2, "heads": 2, "synthetic": 2,
    "train": 3,
    "evaluation": 4,
    "predict": 5, "tag": 5, "calibrate": 5, "export": 5,
    "experiments": 6,
    "api": 7, "serve": 7, "cli": 7, PACKAGE: 7,
}
LAYER_NAMES = ["floor", "cache and metrics", "extract, heads, synthetic", "train", "evaluation", "predict",
               "experiments", "faces"]


def module_files() -> dict[str, str]:
    """Dotted module name -> file, for every .py under ovml/ (a package is its __init__)."""
    modules = {}
    for folder, _, files in os.walk(os.path.join(REPOSITORY, PACKAGE)):
        for file in files:
            if file.endswith(".py"):
                path = os.path.join(folder, file)
                parts = os.path.relpath(path, REPOSITORY)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                modules[".".join(parts)] = path
    return modules


MODULES = module_files()


def is_type_checking(test: ast.expr) -> bool:
    """`if TYPE_CHECKING:` or `if typing.TYPE_CHECKING:`."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_nodes(tree: ast.AST):
    """Every Import / ImportFrom node, except those under `if TYPE_CHECKING:` (its else branch counts)."""
    pending = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        if isinstance(node, ast.If) and is_type_checking(node.test):
            pending.extend(node.orelse)
            continue
        pending.extend(ast.iter_child_nodes(node))


def imported_modules(module: str, is_package: bool, source: str, modules: set[str] | dict) -> set[str]:
    """The modules among `modules` that `module` (its source text given) imports; see the module
    docstring for what counts."""
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in import_nodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source_module = ".".join(base + ([node.module] if node.module else []))
            else:
                source_module = node.module
            targets = [f"{source_module}.{alias.name}" if f"{source_module}.{alias.name}" in modules
                       else source_module for alias in node.names]
        for target in targets:
            while target and target not in modules:     # an attribute path falls back to its module
                target = target.rpartition(".")[0]
            if target and target != module and target.split(".")[0] == PACKAGE:
                found.add(target)
    return found


def read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


GRAPH = {module: imported_modules(module, path.endswith("__init__.py"), read(path), MODULES)
         for module, path in MODULES.items()}


def room(module: str) -> str:
    """`ovml.cache.reader` -> `cache`; the package itself -> `ovml`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_reader_resolves_relative_imports_and_skips_type_checking_ones():
    modules = {"ovml", "ovml.a", "ovml.a.b", "ovml.a.c", "ovml.d", "ovml.e", "ovml.f", "ovml.g"}
    source = """
from typing import TYPE_CHECKING
import numpy
from . import c
from ..d import something
import ovml.e.attribute as alias
if TYPE_CHECKING:
    from ..f import Hint
else:
    from .. import g
def later():
    from ovml import a
"""
    assert imported_modules("ovml.a.b", False, source, modules) == {"ovml.a.c", "ovml.d", "ovml.e", "ovml.g",
                                                                     "ovml.a"}
    assert imported_modules("ovml.a", True, "from .b import x", modules) == {"ovml.a.b"}


def test_no_import_cycle_between_modules():
    found = cycles(GRAPH)
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(component) for component in found)


def test_every_room_has_a_place_in_the_layer_table():
    unplaced = sorted({room(module) for module in MODULES} - set(LAYERS))
    assert not unplaced, (f"ovml rooms missing from LAYERS in {os.path.basename(__file__)} (and from "
                          f"docs/architecture.md): {', '.join(unplaced)}")


def test_no_module_imports_from_a_layer_above_its_own():
    upward = []
    for module, targets in sorted(GRAPH.items()):
        if room(module) not in LAYERS:
            continue                                     # reported by the test above
        for target in sorted(targets):
            if room(target) in LAYERS and LAYERS[room(target)] > LAYERS[room(module)]:
                upward.append(f"{module} (layer {LAYERS[room(module)]}, {LAYER_NAMES[LAYERS[room(module)]]}) "
                              f"imports {target} (layer {LAYERS[room(target)]}, {LAYER_NAMES[LAYERS[room(target)]]})")
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_no_module_is_longer_than_the_house_allows():
    long = []
    for module, path in sorted(MODULES.items()):
        with open(path, encoding="utf-8") as handle:
            lines = sum(1 for _ in handle)
        if lines > MAX_LINES:
            long.append(f"{os.path.relpath(path, REPOSITORY)}: {lines} lines")
    assert not long, f"modules over {MAX_LINES} lines:\n" + "\n".join(long)


# What no tracked file may contain. Each pattern is written so that it does not match itself.
OUTSIDE_REFERENCES = {
    # a path into a folder beside the checkout (where the old design notes lived)
    "a path to a folder beside the checkout": re.compile(r"\.\./shared|shared/+design"),
    # an absolute path of a machine: a home or work folder (/tmp and URLs are fine)
    "an absolute machine path": re.compile(r"(?<![\w.~])/(?:home|Users|work|root)/"),
}
# A tracker id: the word issue, pull request or PR followed by a number (with or without a '#'),
# or a '#' directly followed by digits (not inside an HTML entity or a path; CSS, HTML and
# JavaScript files, where such a '#' starts a colour, are not read for bare ids) ...
TRACKER_ID = re.compile(r"(?i)\b(?:issue|pull request|PR)\s*#?\d+|(?<![\w&/#])#\d+\b")
# ... which is fine when another project's name stands right before it: a backticked
# `owner/repository`, "their", "upstream", or one of the projects named here (see the examples
# in test_the_reference_patterns_mean_what_they_say).
OTHER_PROJECT = re.compile(
    r"(?i)(?:`[\w.-]+/[\w.-]+`|\b(?:their|upstream|torchvision|pytorch|torch|zarr|numpy|clip-anytorch|"
    r"setuptools|h5py|dask|scikit-learn|pillow))\s+$")
NO_BARE_IDS = (".css", ".html", ".js")


def tracked_text_files() -> dict[str, str]:
    """Path -> text of every file git tracks (binary files, holding a NUL byte, left out)."""
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=REPOSITORY, capture_output=True, check=True).stdout
    texts = {}
    for name in listing.decode().split("\0"):
        path = os.path.join(REPOSITORY, name)
        if name and os.path.isfile(path):
            with open(path, "rb") as handle:
                data = handle.read()
            if b"\0" not in data:
                texts[name] = data.decode("utf-8", errors="replace")
    return texts


def outside_references(name: str, text: str) -> list[str]:
    """'file:line: what' for every reference `name` makes outside the repository."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for what, pattern in OUTSIDE_REFERENCES.items():
            if pattern.search(line):
                found.append(f"{name}:{number}: {what}: {line.strip()[:120]}")
        for match in TRACKER_ID.finditer(line):
            bare = match.group(0).startswith("#")
            if bare and name.endswith(NO_BARE_IDS):
                continue
            if not OTHER_PROJECT.search(line[:match.start()]):
                found.append(f"{name}:{number}: a tracker id ({match.group(0)}): {line.strip()[:120]}")
    return found


# Examples that must be found are written in pieces, so that this file does not hold them whole.
@pytest.mark.parametrize("line, expected", [
    ("see issue" + " 10's table", 1), ("(Issue #" + "7, item 4)", 1), ("fixed in #" + "12", 1),
    ("PR" + " 3 moved it", 1), ("the notes in ../" + "shared/x", 1), ("/" + "home/someone/data", 1),
    ("the maintainers (`hbdat/cvpr20_LESA` issue #3)", 0), ("torchvision pull request #9606", 0),
    ("their #132", 0), ("&#39; and issues in general", 0), ("path/#12", 0), ("~/.cache/clip", 0),
    ("https://example.org/work/x", 0), ("/tmp/oldest/bin/pip", 0),
])
def test_the_reference_patterns_mean_what_they_say(line, expected):
    assert len(outside_references("example.md", line)) == expected


@pytest.mark.skipif(not os.path.exists(os.path.join(REPOSITORY, ".git")),
                    reason="not a git checkout: no list of tracked files")
def test_no_tracked_file_points_outside_the_repository():
    found = [problem for name, text in sorted(tracked_text_files().items())
             for problem in outside_references(name, text)]
    assert not found, "references outside the repository:\n" + "\n".join(found)


# A repository path named in prose or code: docs/<name>.md, ovml/<room>/<module>.py, benchmarks/..., tests/...
# (globs and placeholders such as ovml/*.py or docs/<file>.md are not paths).
REPOSITORY_PATH = re.compile(r"(?<![\w/.-])((?:docs|ovml|benchmarks|tests)/[\w/.-]*\w\.(?:md|py|sh|png|txt))\b")
# An upper-case design note named alone, as the old notes outside the repository were: the
# repository's notes are docs/*.md.
NOTE_NAME = re.compile(r"(?<![\w/.-])([A-Z]{3,}\.md)\b")


@pytest.mark.skipif(not os.path.exists(os.path.join(REPOSITORY, ".git")),
                    reason="not a git checkout: no list of tracked files")
def test_every_repository_path_a_tracked_file_names_exists():
    texts = tracked_text_files()
    missing = []
    for name, text in sorted(texts.items()):
        for number, line in enumerate(text.splitlines(), 1):
            paths = REPOSITORY_PATH.findall(line) + NOTE_NAME.findall(line)
            missing += [f"{name}:{number}: {path}" for path in paths
                        if not os.path.exists(os.path.join(REPOSITORY, path))]
    assert not missing, "references to files the repository does not have:\n" + "\n".join(missing)
