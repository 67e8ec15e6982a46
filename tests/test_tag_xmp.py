"""XMP sidecars written by `ovml tag --format xmp`, read back with ExifTool: another application's
fields are kept, keywords are added to dc:subject once."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from ovml.cli import main
from tests.folder_dataset import CLASSES, write_folder_dataset

pytestmark = pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool is not installed "
                                "(Debian: libimage-exiftool-perl; .ci/run installs it)")

LABELS = ",".join(name for name, _ in CLASSES)
OTHER_APPLICATION = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmp:Rating="4" photoshop:City="Lyon">
   <dc:subject><rdf:Bag><rdf:li>holiday</rdf:li><rdf:li>red_square</rdf:li></rdf:Bag></dc:subject>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>
"""


def read_xmp(path: str) -> dict:
    """ExifTool's reading of a sidecar, tags named by group (`exiftool -j -G1`)."""
    done = subprocess.run(["exiftool", "-j", "-G1", path], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)[0]


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


@pytest.fixture
def images(tmp_path) -> str:
    write_folder_dataset(str(tmp_path / "photos"), images=4)
    return str(tmp_path / "photos" / "img")


def test_an_existing_sidecar_keeps_every_other_field_and_gains_each_keyword_once(images, tiny_clip, tmp_path):
    sidecar = os.path.join(images, "000.png.xmp")
    with open(sidecar, "w", encoding="utf-8") as handle:
        handle.write(OTHER_APPLICATION)
    before = read_xmp(sidecar)
    pixels = open(os.path.join(images, "000.png"), "rb").read()
    result = CliRunner().invoke(main, ["tag", images, "--out", str(tmp_path / "tagged"), "--model", tiny_clip,
                                       "--labels", LABELS, "--top-k", "5", "--format", "xmp", "--workers", "0",
                                       "--hierarchy", "ovml"])
    assert result.exit_code == 0, result.output
    assert "xmp updated 1" in result.output and "xmp written 3" in result.output
    after = read_xmp(sidecar)
    for field in ("XMP-xmp:Rating", "XMP-photoshop:City"):
        assert after[field] == before[field]
    subject = as_list(after["XMP-dc:Subject"])
    assert subject[:2] == ["holiday", "red_square"] and sorted(subject[2:]) == sorted(
        name for name, _ in CLASSES if name != "red_square")
    assert sorted(as_list(after["XMP-lr:HierarchicalSubject"])) == sorted(f"ovml|{name}" for name, _ in CLASSES)
    assert open(os.path.join(images, "000.png"), "rb").read() == pixels
    fresh = read_xmp(os.path.join(images, "001.png.xmp"))
    assert len(as_list(fresh["XMP-dc:Subject"])) == 5 and "XMP-xmp:Rating" not in fresh


def test_stem_named_sidecars_and_overwrite_replace_only_the_keywords(images, tiny_clip, tmp_path):
    sidecar = os.path.join(images, "000.xmp")
    with open(sidecar, "w", encoding="utf-8") as handle:
        handle.write(OTHER_APPLICATION)
    result = CliRunner().invoke(main, ["tag", images, "--out", str(tmp_path / "tagged"), "--model", tiny_clip,
                                       "--labels", LABELS, "--top-k", "1", "--format", "xmp", "--workers", "0",
                                       "--xmp-name", "stem", "--overwrite"])
    assert result.exit_code == 0, result.output
    after = read_xmp(sidecar)
    assert after["XMP-xmp:Rating"] == 4 and after["XMP-photoshop:City"] == "Lyon"
    assert len(as_list(after["XMP-dc:Subject"])) == 1 and "holiday" not in as_list(after["XMP-dc:Subject"])
    assert sorted(name for name in os.listdir(images) if name.endswith(".xmp")) == [f"{i:03d}.xmp" for i in range(4)]
