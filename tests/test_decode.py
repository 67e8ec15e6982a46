"""Decode modes of `extract` (exact, draft, gpu and its CPU fallbacks) and the steady-state rate."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ovml.cache.reader import CacheReader
from ovml.cache.schema import CacheError
from ovml.cli import main
from ovml.config import ExtractConfig
from ovml.extract import device_decode
from ovml.extract.backbone.weights import import_clip
from ovml.extract.device_decode import DevicePixels, resolve_decode
from ovml.extract.images import ImageRows, collate, decode_pixels, normalise, open_rgb
from ovml.extract import runner
from ovml.extract.runner import run_extraction
from ovml.extract.summary import SteadyRate
from tests.cache_arrays import all_arrays, assert_same_arrays
from tests.folder_dataset import write_folder_dataset


def encoded(size: tuple[int, int], mode: str = "RGB", fmt: str = "JPEG", seed: int = 0) -> bytes:
    """An image of smooth random content (so that resampling filters matter little) as file bytes."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (size[1] // 16 + 1, size[0] // 16 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(coarse, "RGB").resize(size, Image.BICUBIC).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, quality=90)
    return buffer.getvalue()


@pytest.mark.parametrize("size", [(80, 96), (320, 256), (1001, 750), (224, 224), (50, 30)])
@pytest.mark.parametrize("mode, fmt", [("RGB", "JPEG"), ("L", "PNG"), ("CMYK", "JPEG"), ("P", "PNG")])
def test_pixels_then_normalise_is_clips_transform_bit_for_bit(size, mode, fmt):
    data = encoded(size, mode, fmt)
    for side in (96, 224):
        reference, _ = open_rgb(data, import_clip().clip._transform(side))
        pixels, reason = decode_pixels(data, side)
        assert reason == "" and pixels.dtype == torch.uint8 and pixels.shape == (3, side, side)
        assert torch.equal(normalise(pixels[None])[0], reference)


def test_draft_decodes_large_jpegs_at_reduced_scale_and_leaves_others_exact():
    small = encoded((400, 300))                             # shorter side < 2 x 224: no reduction
    assert torch.equal(decode_pixels(small, 224, draft=True)[0], decode_pixels(small, 224)[0])
    png = encoded((1024, 768), fmt="PNG")                   # not a JPEG: no DCT scaling
    assert torch.equal(decode_pixels(png, 224, draft=True)[0], decode_pixels(png, 224)[0])
    large = encoded((1024, 768))
    exact, drafted = decode_pixels(large, 224)[0].float(), decode_pixels(large, 224, draft=True)[0].float()
    assert not torch.equal(exact, drafted)
    assert (exact - drafted).abs().mean() < 2.0             # same geometry, slightly other filtering
    assert decode_pixels(b"\xff\xd8 not really", 224, draft=True)[1].startswith("not a")


def test_gpu_decode_without_cuda_falls_back_to_exact_with_one_note(folder_dataset, tiny_clip, tmp_path):
    assert resolve_decode("gpu", torch.device("cpu")) == (
        "exact", "--decode gpu: cpu is not a CUDA device; decoding on the CPU (exact) instead")
    assert resolve_decode("draft", torch.device("cpu")) == ("draft", None)
    settings = ["extract", "--dataset", "folder", "--root", folder_dataset, "--model", tiny_clip,
                "--workers", "0", "--unit-rows", "8", "--threads", "2"]
    runner = CliRunner()
    exact = runner.invoke(main, settings + ["--out", str(tmp_path / "exact.zarr")])
    gpu = runner.invoke(main, settings + ["--out", str(tmp_path / "gpu.zarr"), "--decode", "gpu"])
    assert exact.exit_code == 0 and gpu.exit_code == 0, gpu.output
    assert gpu.output.count("--decode gpu: cpu is not a CUDA device") == 2   # at once, and in the summary
    assert_same_arrays(all_arrays(str(tmp_path / "exact.zarr")), all_arrays(str(tmp_path / "gpu.zarr")))


@pytest.mark.skipif(device_decode.torchvision_version() < device_decode.MIN_TORCHVISION,
                    reason="torchvision < 0.19 has no batched decode_jpeg; --decode gpu falls back to exact there")
def test_device_decoding_path_on_the_cpu(tmp_path, monkeypatch):
    """The gpu mode's code run with torchvision's CPU decoder: JPEGs travel as bytes and are
    resized by torchvision (close to PIL's filter); other files, CMYK and truncated JPEGs are
    decoded by PIL in the workers; a JPEG the decoder rejects falls back to PIL, said once."""
    files = {"photo.jpg": encoded((640, 480)), "grey.jpg": encoded((300, 400), "L"),
             "cmyk.jpg": encoded((200, 160), "CMYK"), "pic.png": encoded((256, 256), fmt="PNG"),
             "cut.jpg": encoded((640, 480))[:3000], "other.jpg": encoded((500, 375), seed=1)}
    paths = []
    for name, data in files.items():
        paths.append(str(tmp_path / name))
        with open(paths[-1], "wb") as handle:
            handle.write(data)
    items = [ImageRows(paths, 96, mode="gpu")[row] for row in range(len(paths))]
    batch = collate(items, side=96)
    assert batch.jpeg_index == [0, 1, 5] and [len(data) for data in batch.jpegs().values()] == [
        len(files[name]) for name in ("photo.jpg", "grey.jpg", "other.jpg")]
    exact = [decode_pixels(data, 96) for data in files.values()]
    real_decode = device_decode.decode_jpegs

    def reject_other(datas, device):
        if any(len(data) == len(files["other.jpg"]) for data in datas):
            raise RuntimeError("nvjpeg says no")
        return real_decode(datas, device)

    monkeypatch.setattr(device_decode, "decode_jpegs", reject_other)
    to_device = DevicePixels(torch.device("cpu"), 96)
    pixels = to_device(batch)
    assert batch.reasons[4].startswith("not a readable image") and batch.reasons[4] == exact[4][1]
    for index, (expected, reason) in enumerate(exact):
        if index in (0, 1):                                   # torchvision's resize, not PIL's
            assert (pixels[index].float() - expected.float()).abs().mean() < 1.5
        elif reason == "":
            assert torch.equal(pixels[index], expected)
    assert to_device.note() == ("--decode gpu: 1 JPEG(s) the GPU decoder rejected were decoded on the CPU "
                                "(first: RuntimeError: nvjpeg says no)")


def test_draft_extraction_is_recorded_and_not_mixed_with_exact(tmp_path, tiny_clip):
    root = str(tmp_path / "odd")
    write_folder_dataset(root, images=6, broken=True)
    settings = dict(dataset="folder", root=root, model=tiny_clip, workers=0, unit_rows=4, batch_size=3,
                    progress=False, threads=2)
    exact = str(tmp_path / "exact.zarr")
    run_extraction(ExtractConfig(out=exact, **settings))
    draft = str(tmp_path / "draft.zarr")
    summary = run_extraction(ExtractConfig(out=draft, decode="draft", **settings))
    assert summary.failures == 4
    reader = CacheReader(draft)
    assert reader.backbone["decode"] == "draft" and "decode" not in CacheReader(exact).backbone
    for split in reader.splits:
        rows = reader.num_rows(split)
        assert np.array_equal(reader.read(split, "ok", 0, rows), CacheReader(exact).read(split, "ok", 0, rows))
    with pytest.raises(CacheError, match="different decode"):
        run_extraction(ExtractConfig(out=exact, decode="draft", **settings))


def test_steady_rate_skips_the_first_round():
    steady = SteadyRate(skip=2)
    for now, images in ((5.0, 8), (5.1, 8), (6.1, 8), (7.1, 4)):
        steady.mark(images, now)
    assert steady.images == 12 and steady.seconds == pytest.approx(2.0)
    assert steady.images_per_second == pytest.approx(6.0)


def test_several_writer_threads_write_the_same_cache(folder_dataset, tiny_clip, tmp_path, monkeypatch):
    """On CUDA units are written by several threads; the cache and the errors list are the same."""
    settings = dict(dataset="folder", root=folder_dataset, model=tiny_clip, workers=0, unit_rows=2, batch_size=2,
                    progress=False, threads=2)
    one = run_extraction(ExtractConfig(out=str(tmp_path / "one.zarr"), **settings))
    monkeypatch.setattr(runner, "writer_threads", lambda store, backbone: 3)
    three = run_extraction(ExtractConfig(out=str(tmp_path / "three.zarr"), **settings))
    assert_same_arrays(all_arrays(str(tmp_path / "one.zarr")), all_arrays(str(tmp_path / "three.zarr")))
    with open(one.errors_file) as left, open(three.errors_file) as right:
        assert sorted(left) == sorted(right)
