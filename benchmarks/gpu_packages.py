"""The Python packages `benchmarks/gpu_suite.sh` needs on a lent GPU machine, and the check that
they are enough.

A lent machine holds PyTorch, torchvision, numpy, pillow, h5py, click and matplotlib (with what
they depend on) and reaches no package index. `requirements` prints, one `name==version` a line,
every other distribution that ovml's requirements (setup.cfg) pull in for a given Python, at the
version this environment holds (where `make` installed ovml and the tests pass), read from the
installed packages' metadata: `benchmarks/gpu_prepare.sh` downloads their wheels. `check` imports
every module the suite runs (all of ovml, the suite's benchmarks, clip through ovml's shim, the
autocast emulation of `--cpu-smoke`) and writes and reads a small cache in both stores, which
loads zarr's codecs: the suite's first step, and `benchmarks/gpu_check_wheels.sh`'s proof here.

    python -m benchmarks.gpu_packages requirements [--python-version 3.12]
    python -m benchmarks.gpu_packages check
"""
from __future__ import annotations

import argparse
import configparser
import importlib
import importlib.metadata
import os
import pkgutil
import sys
import tempfile

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LENT = ("torch", "torchvision", "numpy", "pillow", "h5py", "click", "matplotlib")   # on every lent machine
SUITE_MODULES = ("benchmarks.speed.b1_extract", "benchmarks.speed.b2_stream", "benchmarks.speed.b3_backbone_loop",
                 "benchmarks.speed.b6_head", "benchmarks.experiments.e5_planted_amp", "tests.autocast_emulation")


def ovml_requirements() -> list[Requirement]:
    """setup.cfg's install_requires."""
    config = configparser.ConfigParser()
    config.read(os.path.join(REPOSITORY, "setup.cfg"))
    lines = config["options"]["install_requires"].splitlines()
    return [Requirement(line.split("#")[0].strip()) for line in lines if line.split("#")[0].strip()]


def marker_environment(python_version: str) -> dict[str, str]:
    """Markers as a CPython `python_version` on Linux x86_64 evaluates them."""
    environment = default_environment()
    environment.update(python_version=python_version, python_full_version=python_version + ".0",
                       sys_platform="linux", platform_system="Linux", platform_machine="x86_64",
                       os_name="posix", implementation_name="cpython", platform_python_implementation="CPython")
    return environment


def closure(roots: list[Requirement], environment: dict[str, str]) -> dict[str, set[str]]:
    """Every distribution `roots` need under `environment`, with the extras asked of it, through
    the metadata of the installed distributions (one not installed here is kept, without deps)."""
    needed: dict[str, set[str]] = {}
    todo = list(roots)
    while todo:
        requirement = todo.pop()
        if requirement.marker is not None and not requirement.marker.evaluate(environment | {"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        extras = set(requirement.extras)
        if name in needed and extras <= needed[name]:
            continue
        needed[name] = needed.get(name, set()) | extras
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in requires:
            dependency = Requirement(line)
            marker = dependency.marker
            if marker is None or any(marker.evaluate(environment | {"extra": extra})
                                     for extra in ("", *needed[name])):
                dependency.marker = None
                todo.append(dependency)
    return needed


def requirements(python_version: str) -> list[str]:
    """`name==version` (this environment's version; the name alone where it is not installed here)
    of every distribution ovml needs under `python_version` that the lent machine lacks."""
    environment = marker_environment(python_version)
    lent = closure([Requirement(name) for name in LENT], environment)
    lines = []
    for name in sorted(set(closure(ovml_requirements(), environment)) - set(lent)):
        try:
            lines.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            print(f"{name}: not installed here; its newest wheel will be fetched", file=sys.stderr)
            lines.append(name)
    return lines


def suite_modules() -> list[str]:
    """Every ovml module (but the `__main__` that runs the command line) and the suite's own modules."""
    import ovml
    names = ["ovml"] + [module.name for module in pkgutil.walk_packages(ovml.__path__, "ovml.")
                        if not module.name.endswith(".__main__")]
    return names + list(SUITE_MODULES)


def check() -> None:
    """Import every module the suite uses, clip and zarr's codecs included; raises on the first failure."""
    names = suite_modules()
    for name in names:
        importlib.import_module(name)
    from ovml.extract.backbone import import_clip
    import_clip().tokenize(["a photo"])
    import dask.array  # noqa: F401  (ovml.cache.lazy)
    import distributed  # noqa: F401  (extract --dask)
    from ovml.cache.reader import CacheReader
    from ovml.synthetic.planted import PlantedWorld, write_planted_world
    with tempfile.TemporaryDirectory() as folder:
        for store in ("tiny.zarr", "tiny.h5"):
            path = write_planted_world(os.path.join(folder, store), PlantedWorld(train_images=8, test_images=8,
                                                                                 unit_rows=4))
            with CacheReader(path) as reader:
                assert reader.read("train", "tokens", 0, 4).shape[0] == 4
    where = sorted({os.path.dirname(os.path.dirname(sys.modules[name].__file__)) for name in ("zarr", "clip", "dask")})
    print(f"imports OK: {len(names)} modules, clip, dask, distributed, zarr and hdf5 stores (from {', '.join(where)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("requirements", help="name==version of each distribution to bring")
    listing.add_argument("--python-version", default="3.12", help="the lent machine's Python (major.minor)")
    commands.add_parser("check", help="import every module the suite uses")
    args = parser.parse_args()
    if args.command == "requirements":
        print("\n".join(requirements(args.python_version)))
    else:
        check()


if __name__ == "__main__":
    main()
