"""CUDA-only paths of `extract`, checked on the CPU with the CUDA calls mocked: the GPU JPEG decoder
waits for the caller's stream and its unusable outputs are not taken; the copies back are waited
for on the features' own GPU, which is made the current device."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torchvision.io
from PIL import Image

from ovml.extract import device_decode, runner
from ovml.extract.device_decode import DevicePixels
from ovml.extract.images import ImageRows, collate, decode_pixels, gpu_jpeg_shape


class Recorder:
    """Stands for torch.cuda's streams and events: notes what is called, in order."""

    def __init__(self):
        self.calls: list[tuple] = []

    def current_stream(self, device=None):
        self.calls.append(("current_stream", device))
        return self

    def synchronize(self):
        self.calls.append(("synchronize",))


def test_gpu_decode_waits_for_the_current_stream_first(monkeypatch):
    """torchvision's CUDA decoder writes from its own stream: the caller's stream on the decoding
    GPU is finished before each decode call."""
    recorder = Recorder()
    monkeypatch.setattr(torch.cuda, "current_stream", recorder.current_stream)
    monkeypatch.setattr(torchvision.io, "decode_jpeg",
                        lambda datas, mode, device: recorder.calls.append(("decode", device)) or ["image"])
    device = torch.device("cuda:1")
    assert device_decode.decode_jpegs([torch.zeros(4, dtype=torch.uint8)], device) == ["image"]
    assert recorder.calls == [("current_stream", device), ("synchronize",), ("decode", device)]


def jpeg(seed: int, size=(64, 48)) -> bytes:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(coarse).resize(size, Image.BICUBIC).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def corrupt_jpeg() -> bytes:
    """A JPEG whose header reads (so it passes the pre-check, `gpu_jpeg_shape`) but whose Huffman
    table is broken, so PIL cannot decode it."""
    data = bytearray(jpeg(9))
    table = data.find(b"\xff\xc4")
    data[table + 5:table + 9] = b"\xff\xff\xff\xff"
    return bytes(data)


def test_unusable_gpu_decodes_are_decoded_on_the_cpu(tmp_path, monkeypatch):
    """The decoder's output is checked: the wrong shape, an image of one value or noise like
    uninitialised memory is not taken; PIL decodes that row instead, and a JPEG PIL cannot read
    either (corrupt past its header) becomes ok = false with PIL's reason."""
    files = [jpeg(0), jpeg(1), jpeg(2), corrupt_jpeg(), jpeg(3)]
    assert gpu_jpeg_shape(files[3]) == (48, 64)
    paths = []
    for index, data in enumerate(files):
        paths.append(str(tmp_path / f"{index}.jpg"))
        with open(paths[-1], "wb") as handle:
            handle.write(data)
    batch = collate([ImageRows(paths, 32, mode="gpu")[row] for row in range(len(paths))], side=32)
    assert batch.jpeg_index == [0, 1, 2, 3, 4] and batch.jpeg_shapes == [(48, 64)] * 5
    rng = np.random.default_rng(0)
    real = device_decode.decode_jpegs

    def unreliable(datas, device):
        good = real([datas[0], datas[4]], device)
        noise = torch.from_numpy(rng.integers(0, 256, (3, 48, 64), dtype=np.uint8))     # stale memory
        return [good[0], torch.zeros(3, 64, 48, dtype=torch.uint8),                      # transposed
                torch.zeros(3, 48, 64, dtype=torch.uint8), noise, good[1]]               # never written

    monkeypatch.setattr(device_decode, "decode_jpegs", unreliable)
    to_device = DevicePixels(torch.device("cpu"), 32)
    pixels = to_device(batch)
    exact = [decode_pixels(data, 32) for data in files]
    assert batch.reasons[:3] + batch.reasons[4:] == ["", "", "", ""]
    assert batch.reasons[3] == exact[3][1] and batch.reasons[3].startswith("not a readable image")
    for row in (1, 2):                                        # PIL's pixels, the exact path's
        assert torch.equal(pixels[row], exact[row][0])
    for row in (0, 4):                                        # the decoder's, resized by torchvision
        assert (pixels[row].float() - exact[row][0].float()).abs().mean() < 2.0
    assert to_device.cpu_fallbacks == 3 and to_device.note() == (
        "--decode gpu: 3 JPEG(s) the GPU decoder rejected were decoded on the CPU (first: decoded to "
        "(3, 64, 48) torch.uint8 on cpu, not (3, 48, 64) torch.uint8 (GPU decoder))")


def test_unwritten_looking_images_are_told_apart_from_photos():
    rng = np.random.default_rng(0)
    photo = torch.from_numpy(np.array(Image.open(io.BytesIO(jpeg(5, (320, 240)))))).permute(2, 0, 1)
    noise = torch.from_numpy(rng.integers(0, 256, (3, 240, 320), dtype=np.uint8))
    flat = torch.full((3, 240, 320), 7, dtype=torch.uint8)
    reasons = device_decode.unwritten_reasons(torch.stack([photo, noise, flat]))
    assert reasons[0] is None and reasons[1].startswith("GPU decoder returned noise")
    assert reasons[2] == "GPU decoder returned an image of one value"


class FakeCudaTensor:
    """Features on `device` as far as BatchFeatures.start looks: half(), contiguous(), to('cpu')."""

    is_cuda = True

    def __init__(self, device: str, shape: tuple):
        self.device, self.shape = torch.device(device), shape

    def half(self):
        return self

    def contiguous(self):
        return self

    def to(self, target, non_blocking=False):
        assert target == "cpu" and non_blocking
        return torch.zeros(self.shape, dtype=torch.float16)


def test_copies_back_are_waited_for_on_the_features_gpu(monkeypatch):
    """The event that `ready()` waits on is recorded on the stream of the features' own GPU
    (cuda:1 here), not on whatever device is current."""
    recorded = []

    class Event:
        def record(self, stream=None):
            recorded.append(stream)

        def synchronize(self):
            recorded.append("waited")

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: ("stream of", device))
    batch = collate([(0, torch.zeros(3, 4, 4, dtype=torch.uint8), None, "", 0.0)], side=4)
    features = runner.BatchFeatures.start(batch, FakeCudaTensor("cuda:1", (1, 9, 8)), FakeCudaTensor("cuda:1", (1, 5)))
    assert recorded == [("stream of", torch.device("cuda:1"))]
    spatial, global_embedding = features.ready()
    assert recorded[-1] == "waited" and spatial.shape == (1, 9, 8) and global_embedding.shape == (1, 5)


@pytest.mark.parametrize("device, expected", [("cuda:1", [torch.device("cuda:1")]), ("cpu", [])])
def test_extraction_makes_its_gpu_the_current_device(monkeypatch, device, expected):
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    runner.use_device(torch.device(device))
    assert chosen == expected


def test_clips_mean_and_std_are_made_once_per_device():
    """normalise reuses them: two host-to-device copies per batch would each wait for the GPU."""
    from ovml.extract.images import clip_mean_std, normalise
    pixels = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    first = normalise(pixels)
    assert clip_mean_std(torch.device("cpu")) is clip_mean_std(torch.device("cpu"))
    assert torch.equal(normalise(pixels), first)
