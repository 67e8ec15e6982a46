"""`ovml serve`'s tower batching (ovml/serve/batcher.py): concurrent callers share tower passes
and each gets its own rows back; a server answering concurrently through it scores as one
answering one request at a time."""
from __future__ import annotations

import threading
import time

import pytest
import torch

import ovml
from ovml.config import ServeConfig
from ovml.serve.app import make_server
from ovml.serve.batcher import TowerBatcher
from tests.test_serve import image_bytes, predict


def test_concurrent_callers_share_passes_and_get_their_own_rows():
    sizes = []

    def encode(images: torch.Tensor):
        sizes.append(len(images))
        time.sleep(0.05)
        return images * 2, images.sum(dim=1)

    batcher = TowerBatcher(encode, max_batch=16, wait_s=0.02)
    results = {}

    def call(i: int) -> None:
        images = torch.full((1 + i % 2, 3), float(i))
        results[i] = (images, batcher.encode(images))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batcher.close()
    assert sum(sizes) == 12 and len(sizes) < 8 and max(sizes) <= 16
    for images, (doubled, summed) in results.values():
        assert torch.equal(doubled, images * 2) and torch.equal(summed, images.sum(dim=1))


def test_a_failing_pass_fails_its_callers_and_the_batcher_goes_on():
    calls = []

    def encode(images: torch.Tensor):
        calls.append(len(images))
        if len(calls) == 1:
            raise RuntimeError("tower broke")
        return images, images

    batcher = TowerBatcher(encode, max_batch=4, wait_s=0.0)
    with pytest.raises(RuntimeError, match="tower broke"):
        batcher.encode(torch.zeros(1, 3))
    assert torch.equal(batcher.encode(torch.ones(2, 3))[0], torch.ones(2, 3))
    batcher.close()


def test_a_batching_server_answers_concurrent_requests_as_one_at_a_time(tiny_run):
    tagger = ovml.load_tagger(tiny_run["run"])
    one_at_a_time = make_server(tagger, ServeConfig(port=0))
    concurrent = make_server(tagger, ServeConfig(port=0, max_batch=8, batch_wait_ms=50), batched=True)
    batcher = concurrent.batcher
    for server in (one_at_a_time, concurrent):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    names = ["001.png", "003.png", "005.png", "007.png", "009.png", "011.png"]
    forms = [({"labels": "cat, red square, green disc" if i % 2 else "dog, blue bar, tree", "top_k": "3",
               "alpha": "0.2"}, {"image": (name, image_bytes(tiny_run, name))}) for i, name in enumerate(names)]
    expected = [predict(one_at_a_time, *form) for form in forms]
    answers = [None] * len(forms)

    def ask(i: int) -> None:
        answers[i] = predict(concurrent, *forms[i])

    passes = batcher.batches
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(forms))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert batcher.batches - passes < len(forms)          # some requests shared a tower pass
    for (status, answer), (expected_status, wanted) in zip(answers, expected):
        assert status == expected_status == 200
        assert [label["name"] for label in answer["labels"]] == [label["name"] for label in wanted["labels"]]
        for got, want in zip(answer["labels"], wanted["labels"]):
            assert got["score"] == pytest.approx(want["score"], abs=1e-3)
    for server in (one_at_a_time, concurrent):
        server.shutdown()
        server.server_close()
    assert concurrent.batcher is None and tagger.encode_images == tagger.backbone.encode   # the server's own
