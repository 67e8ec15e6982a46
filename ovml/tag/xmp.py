"""XMP sidecars through ExifTool: each image's present tags as `dc:subject` keywords (and, with a
hierarchy root, `ROOT|tag` in `lr:hierarchicalSubject`), as digiKam, darktable and Lightroom read.

Why ExifTool: it is the reference XMP writer photo users already have (Debian's
libimage-exiftool-perl), it keeps every field of an existing sidecar (ratings, locations, other
applications' namespaces), keeps `dc:subject` a bag and creates a sidecar from nothing. The
sidecar's keywords are read first, and only the missing ones are added (after the others, whose
order is kept), judged on `name_key` as txt sidecars are (`city street` is `city_street`). pyexiv2 was tried: it
rewrote `dc:subject` as an ordered `rdf:Seq`, and it cannot create a sidecar without a
hand-written packet. One ExifTool process (`-stay_open`) serves every sidecar of a run; each
sidecar is written to a temporary file (`-o`) and renamed into place, so an interrupted run never
leaves half a sidecar, and an existing one is only replaced whole.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess

from ..errors import UsageError
from .vocabulary import name_key

READY = "{ready}"


def exiftool_missing() -> str | None:
    """Why XMP sidecars cannot be written here, or None when ExifTool is on the PATH."""
    if shutil.which("exiftool"):
        return None
    return ("--format xmp needs ExifTool on the PATH (Debian/Ubuntu: apt-get install libimage-exiftool-perl; "
            "macOS: brew install exiftool)")


def keyword_arguments(tags: list[str], hierarchy: str | None, held: dict[str, list[str]],
                      replace: bool) -> list[str]:
    """ExifTool arguments adding to dc:subject the `tags` it does not hold yet (and ROOT|tag to
    lr:hierarchicalSubject); with `replace`, both set to ours (`=` assignments of a list replace it)."""
    operator = "=" if replace else "+="
    subject = set() if replace else {name_key(keyword) for keyword in held.get("Subject", [])}
    arguments = [f"-XMP-dc:Subject{operator}{tag}" for tag in tags if name_key(tag) not in subject]
    if hierarchy:
        paths = set() if replace else {name_key(path) for path in held.get("HierarchicalSubject", [])}
        arguments += [f"-XMP-lr:HierarchicalSubject{operator}{hierarchy}|{tag}" for tag in tags
                      if name_key(f"{hierarchy}|{tag}") not in paths]
    return arguments


class ExifTool:
    """One `exiftool -stay_open` process; `write` adds keywords to one sidecar."""

    def __init__(self):
        missing = exiftool_missing()
        if missing:
            raise UsageError(missing)
        self.process = subprocess.Popen(
            ["exiftool", "-stay_open", "True", "-@", "-", "-common_args", "-charset", "filename=utf8"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8")

    def execute(self, arguments: list[str]) -> str:
        """Run one command (arguments one a line) and return its output."""
        if any("\n" in argument for argument in arguments):
            raise UsageError(f"a tag or path holds a line break, which ExifTool arguments cannot: {arguments!r}")
        self.process.stdin.write("\n".join(arguments + ["-execute"]) + "\n")
        self.process.stdin.flush()
        lines = []
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise UsageError("exiftool stopped unexpectedly: " + "".join(lines).strip())
            if line.strip() == READY:
                return "".join(lines)
            lines.append(line)

    def keywords(self, sidecar: str) -> dict[str, list[str]]:
        """The sidecar's dc:subject and lr:hierarchicalSubject entries, as text."""
        output = self.execute(["-j", "-XMP-dc:Subject", "-XMP-lr:HierarchicalSubject", sidecar])
        try:
            found = json.loads(output)[0]
        except (ValueError, IndexError):
            raise UsageError(f"{sidecar}: exiftool cannot read this sidecar ({output.strip()[:200]})") from None
        listed = lambda value: [str(v) for v in (value if isinstance(value, list) else [value])]
        return {key: listed(found[key]) for key in ("Subject", "HierarchicalSubject") if key in found}

    def write(self, sidecar: str, tags: list[str], hierarchy: str | None, replace: bool) -> str:
        """Add `tags` to `sidecar` (created when absent); returns written, updated or unchanged."""
        folder, name = os.path.split(sidecar)
        temporary = os.path.join(folder, f".{name}.ovml-tmp.xmp")
        if os.path.exists(temporary):
            os.remove(temporary)
        exists = os.path.exists(sidecar)
        held = self.keywords(sidecar) if exists and not replace else {}
        arguments = keyword_arguments(tags, hierarchy, held, replace)
        if exists and not arguments:
            return "unchanged"
        output = self.execute(["-m", "-o", temporary] + arguments + ([sidecar] if exists else []))
        if not os.path.exists(temporary):
            raise UsageError(f"{sidecar}: exiftool wrote no sidecar ({output.strip() or 'no message'})")
        os.replace(temporary, sidecar)
        return "updated" if exists else "written"

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.write("-stay_open\nFalse\n")
            self.process.stdin.flush()
            self.process.communicate(timeout=30)

    def __enter__(self) -> "ExifTool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
