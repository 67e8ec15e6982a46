"""`ovml serve` over HTTP: the endpoint's scores equal `ovml predict --json`'s, every bad request
is a 4xx JSON answer after which the server still serves, and the page needs nothing remote."""
from __future__ import annotations

import http.client
import json
import os
import re
import struct
import threading
import zlib
from importlib import resources

import pytest
from click.testing import CliRunner

import ovml
from ovml.cli import main
from ovml.config import ServeConfig
from ovml.serve.app import MAX_BODY, make_server

BOUNDARY = "ovml-test-boundary"


@pytest.fixture(scope="module")
def server(tiny_run):
    served = make_server(ovml.load_tagger(tiny_run["run"]), ServeConfig(port=0))
    thread = threading.Thread(target=served.serve_forever, daemon=True)
    thread.start()
    yield served
    served.shutdown()
    served.server_close()


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> bytes:
    parts = [f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    parts += [f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
              f'Content-Type: application/octet-stream\r\n\r\n'.encode() + data + b"\r\n"
              for name, (filename, data) in files.items()]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def request(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """(status, parsed JSON or text) of one request."""
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=60)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    kind = response.getheader("Content-Type", "")
    return response.status, json.loads(data) if kind.startswith("application/json") else data.decode()


def predict(server, fields: dict[str, str], files: dict[str, tuple[str, bytes]]):
    return request(server, "POST", "/api/predict", multipart(fields, files),
                   {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})


def image_bytes(tiny_run, name: str = "005.png") -> bytes:
    with open(os.path.join(tiny_run["images"], name), "rb") as handle:
        return handle.read()


@pytest.mark.parametrize("alpha", ["0", "0.4"])
def test_the_endpoint_scores_equal_ovml_predict(server, tiny_run, alpha):
    image = os.path.join(tiny_run["images"], "005.png")
    result = CliRunner().invoke(main, ["predict", image, "--labels", "green disc, cat,red square, tree", "--head",
                                       tiny_run["run"], "--top-k", "3", "--alpha", alpha, "--json"])
    assert result.exit_code == 0, result.output
    expected = json.loads(result.output)[0]["labels"]
    status, answer = predict(server, {"labels": "green disc, cat,red square, tree", "top_k": "3", "alpha": alpha},
                             {"image": ("005.png", image_bytes(tiny_run))})
    assert status == 200 and answer == {"labels": expected}


def test_the_endpoint_decides_with_threshold_auto_as_ovml_predict_does(server, tiny_run):
    image = os.path.join(tiny_run["images"], "005.png")
    labels = "green disc, cat,red square, tree, blue bar"
    result = CliRunner().invoke(main, ["predict", image, "--labels", labels, "--head", tiny_run["run"],
                                       "--threshold", "auto", "--json"])
    assert result.exit_code == 0, result.output
    expected = json.loads(result.output)[0]["labels"]
    assert all(label["probability"] >= 0.5 for label in expected)
    status, answer = predict(server, {"labels": labels, "threshold": "auto"}, {"image": ("005.png", image_bytes(tiny_run))})
    assert status == 200 and answer == {"labels": expected}
    assert request(server, "GET", "/api/info")[1]["calibrated"] is True
    status, answer = predict(server, {"labels": labels, "threshold": "often"}, {"image": ("a.png", image_bytes(tiny_run))})
    assert status == 400 and "threshold" in answer["error"]


def test_attention_maps_come_with_the_scores_when_asked(server, tiny_run):
    fields = {"labels": "cat, dog", "attention": "1"}
    status, answer = predict(server, fields, {"image": ("a.png", image_bytes(tiny_run))})
    assert status == 200 and {label["name"] for label in answer["labels"]} == {"cat", "dog"}
    maps = answer["attention"]
    assert maps["grid"] == [3, 3] and len(maps["maps"]) == 2 and all(len(m) == 9 for m in maps["maps"])
    assert all(0 < sum(m) <= 1 + 1e-4 for m in maps["maps"])   # attention over the 9 positions (no mean token)
    assert maps["view"].startswith("data:image/png;base64,")
    assert predict(server, {"labels": "cat, dog"}, {"image": ("a.png", image_bytes(tiny_run))})[1].keys() == {"labels"}


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels: a decompression bomb to PIL."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_bad_requests_get_a_json_4xx_and_the_server_keeps_serving(server, tiny_run):
    good = image_bytes(tiny_run)
    form = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    cases = {
        "no image": (400, "no image", lambda: predict(server, {"labels": "cat"}, {})),
        "empty image": (400, "no image", lambda: predict(server, {"labels": "cat"}, {"image": ("e.png", b"")})),
        "not an image": (400, "not an image file",
                         lambda: predict(server, {"labels": "cat"}, {"image": ("notes.txt", b"just words\n")})),
        "bomb": (400, "too large to decode safely",
                 lambda: predict(server, {"labels": "cat"}, {"image": ("bomb.png", png_claiming(30000, 30000))})),
        "no labels": (400, "no labels", lambda: predict(server, {}, {"image": ("a.png", good)})),
        "blank labels": (400, "no labels", lambda: predict(server, {"labels": " , ,"}, {"image": ("a.png", good)})),
        "bad top_k": (400, "top_k must be a number",
                      lambda: predict(server, {"labels": "cat", "top_k": "many"}, {"image": ("a.png", good)})),
        "alpha out of range": (400, "alpha must lie in [0.0, 1.0]",
                               lambda: predict(server, {"labels": "cat", "alpha": "2"}, {"image": ("a.png", good)})),
        "JSON body": (415, "not a form", lambda: request(server, "POST", "/api/predict", b'{"labels": "cat"}',
                                                        {"Content-Type": "application/json"})),
        "no content type": (415, "not a form", lambda: request(server, "POST", "/api/predict", b"labels=cat")),
        "url-encoded, no image": (400, "no image", lambda: request(
            server, "POST", "/api/predict", b"labels=cat", {"Content-Type": "application/x-www-form-urlencoded"})),
        "no boundary": (400, "without a boundary", lambda: request(
            server, "POST", "/api/predict", b"x", {"Content-Type": "multipart/form-data"})),
        "cut multipart": (400, "malformed multipart", lambda: request(
            server, "POST", "/api/predict", multipart({"labels": "cat"}, {})[:-20], form)),
        "too large": (413, "at most", lambda: request(
            server, "POST", "/api/predict", None, form | {"Content-Length": str(MAX_BODY + 1)})),
        "unknown endpoint": (404, "no endpoint", lambda: request(server, "POST", "/api/other", b"", form)),
        "unknown page": (404, "no page", lambda: request(server, "GET", "/static/../setup.cfg")),
        "unknown method": (501, "Unsupported method", lambda: request(server, "DELETE", "/api/predict")),
    }
    for case, (status, words, send) in cases.items():
        got, answer = send()
        assert got == status and words in answer["error"], (case, got, answer)
        ok, still = predict(server, {"labels": "cat, dog"}, {"image": ("a.png", good)})
        assert ok == 200 and len(still["labels"]) == 2, (case, still)


def test_the_page_and_its_assets_are_served_locally(server):
    status, page = request(server, "GET", "/")
    assert status == 200 and "<title>ovml" in page
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page):
        assert request(server, "GET", asset)[0] == 200, asset
    for asset in resources.files("ovml.serve").joinpath("static").iterdir():
        text = asset.read_text(encoding="utf-8")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), f"{asset.name} names a remote host"
    status, info = request(server, "GET", "/api/info")
    assert status == 200 and info["attention"] and info["vocabulary"][0] == "red_square"


def test_serve_binds_loopback_unless_told(monkeypatch):
    import ovml.serve
    seen = []
    monkeypatch.setattr(ovml.serve, "serve", lambda config, echo: seen.append(config))
    assert CliRunner().invoke(main, ["serve", "--head", "runs/x"]).exit_code == 0
    result = CliRunner().invoke(main, ["serve", "--head", "runs/x", "--host", "0.0.0.0", "--port", "8000", "--gpu", "1"])
    assert result.exit_code == 0 and "anyone who can reach this machine" in result.output
    assert [(c.host, c.port, c.tagger.device) for c in seen] == [("127.0.0.1", 7860, "cpu"), ("0.0.0.0", 8000, "cuda:1")]
