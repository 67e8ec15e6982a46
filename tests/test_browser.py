"""The page of `ovml serve` in a real browser: headless Chromium loads it, a file is picked, labels
are typed, and the ranked list and the attention maps appear; then the alpha slider, a suggested
label and a dropped image. Skipped where Chromium is not installed (`.ci/run` installs Debian's
`chromium`, so CI runs it)."""
from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest
from PIL import Image, ImageDraw

from tests.browser import Chromium, find_chromium

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = find_chromium()
LABELS = ["red_square", "blue_bar", "yellow_dot", "sky", "cat"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install "
                                                          "chromium; .ci/run installs it), so the page is not tested in a browser")


def draw_scene(path: str) -> str:
    """A small picture with a few of the vocabulary's shapes on it."""
    image = Image.new("RGB", (320, 240), (150, 200, 240))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 170, 320, 240), fill=(90, 160, 80))
    draw.rectangle((40, 110, 120, 190), fill=(210, 40, 40))
    draw.rectangle((170, 60, 290, 90), fill=(40, 60, 200))
    draw.ellipse((250, 12, 295, 57), fill=(250, 215, 50))
    image.save(path)
    return path


def start_server(run: str, log: str, *options: str) -> tuple[subprocess.Popen, str]:
    """`ovml serve` as a user starts it, on a free port, with any further `options`; (process, its URL)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(log, "w") as handle:
        process = subprocess.Popen([sys.executable, "-m", "ovml.cli", "serve", "--head", run, "--port", "0", *options],
                                   stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        with open(log) as handle:
            found = re.search(r"ovml serve: (http://\S+/)", handle.read())
        if found:
            return process, found.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.2)
    process.kill()
    with open(log) as handle:
        raise AssertionError(f"ovml serve did not start: {handle.read()[-2000:]}")


def endpoint_ranking(url: str, image: str, labels: list[str]) -> list[str]:
    host, port = re.match(r"http://([^:/]+):(\d+)/", url).groups()
    with open(image, "rb") as handle:
        data = handle.read()
    body = (f'--b\r\nContent-Disposition: form-data; name="labels"\r\n\r\n{", ".join(labels)}\r\n'
            f'--b\r\nContent-Disposition: form-data; name="top_k"\r\n\r\n{len(labels)}\r\n'
            f'--b\r\nContent-Disposition: form-data; name="image"; filename="scene.png"\r\n\r\n').encode()
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    connection.request("POST", "/api/predict", body + data + b"\r\n--b--\r\n",
                       {"Content-Type": "multipart/form-data; boundary=b"})
    answer = json.loads(connection.getresponse().read())
    connection.close()
    return [label["name"] for label in answer["labels"]]


RANKED = "[...document.querySelectorAll('#ranked li')].map(li => [li.querySelector('.name').textContent, " \
         "Number(li.querySelector('.score').textContent)])"
DRAWN = "[...document.querySelectorAll('canvas.attention')].filter(c => c.dataset.drawn === '1').length"
PIXEL_SPREAD = """(() => { const c = document.querySelector('canvas.attention');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let low = 255, high = 0; for (let i = 0; i < d.length; i += 4) { low = Math.min(low, d[i]); high = Math.max(high, d[i]); }
  return high - low; })()"""


DROP = """const canvas = document.createElement('canvas'); canvas.width = 64; canvas.height = 48;
  canvas.getContext('2d').fillRect(8, 8, 30, 20);
  canvas.toBlob((blob) => { const files = new DataTransfer();
    files.items.add(new File([blob], 'dropped.png', {type: 'image/png'}));
    document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: files, bubbles: true,
                                                                         cancelable: true})); });"""


def act(browser: Chromium, script: str) -> None:
    """Run a user action in the page after marking it 'waiting', so that a wait for 'done' waits for its answer."""
    browser.evaluate(f"(() => {{ document.body.dataset.state = 'waiting'; {script} }})()")


def test_the_page_tags_an_uploaded_image_in_chromium(tiny_run, tmp_path):
    image = draw_scene(str(tmp_path / "scene.png"))
    server, url = start_server(tiny_run["run"], str(tmp_path / "serve.log"))
    try:
        with Chromium(CHROMIUM, str(tmp_path / "profile"), str(tmp_path / "chromium.log")) as browser:
            browser.open(url)
            browser.wait_for("document.body.dataset.state === 'ready' && "
                             "document.querySelectorAll('#suggestions button').length === 5", what="the vocabulary")
            browser.upload("#file", image)
            browser.type_into("#labels", ", ".join(LABELS) + ", ")
            browser.wait_for(f"document.body.dataset.state === 'done' && {DRAWN} === {len(LABELS)}", timeout=60,
                             what="the ranked labels and their attention maps")
            ranked = browser.evaluate(RANKED)
            assert sorted(name for name, _ in ranked) == sorted(LABELS)
            assert [score for _, score in ranked] == sorted((score for _, score in ranked), reverse=True)
            assert [name for name, _ in ranked] == endpoint_ranking(url, image, LABELS)
            assert browser.evaluate(PIXEL_SPREAD) > 30, "the attention canvas is blank"
            assert browser.evaluate("[...document.querySelectorAll('#suggestions button')].map(b => b.textContent)") \
                == ["green_disc", "white_ring"]
            screenshot = browser.screenshot(str(tmp_path / "serve.png"))
            if os.environ.get("OVML_SCREENSHOT"):  # `OVML_SCREENSHOT=docs/serve.png pytest tests/test_browser.py`
                shutil.copyfile(screenshot, os.environ["OVML_SCREENSHOT"])
            act(browser, "const a = document.getElementById('alpha'); a.value = '1'; a.dispatchEvent(new Event('input'));")
            browser.wait_for("document.body.dataset.state === 'done'", timeout=60, what="the ranking at alpha 1")
            assert "alpha 1.00" in browser.evaluate("document.getElementById('status').textContent")
            assert browser.evaluate(RANKED) != ranked
            act(browser, "document.querySelector('#suggestions button').click();")   # adds green_disc
            browser.wait_for(f"document.body.dataset.state === 'done' && {DRAWN} === {len(LABELS) + 1}", timeout=60,
                             what="a suggested label added")
            assert "green_disc" in [name for name, _ in browser.evaluate(RANKED)]
            act(browser, DROP)
            browser.wait_for("document.body.dataset.state === 'done'", timeout=60, what="a dropped image tagged")
            assert browser.evaluate("state.file.name") == "dropped.png" and browser.evaluate(DRAWN) == len(LABELS) + 1
            assert browser.evaluate("document.getElementById('decide-field').hidden") is False   # the run is calibrated
            act(browser, "document.getElementById('decide').click();")
            browser.wait_for("document.body.dataset.state === 'done'", timeout=60, what="the labels judged present")
            assert "judged present" in browser.evaluate("document.getElementById('status').textContent")
            shown = browser.evaluate("[...document.querySelectorAll('#ranked .probability')].map(p => p.textContent)")
            assert len(shown) == len(browser.evaluate(RANKED)) and all(float(p[2:]) >= 0.5 for p in shown)
        assert os.path.getsize(screenshot) > 20_000
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_server_with_a_token_asks_for_it_once(tiny_run, tmp_path):
    """`--token`: the page shows its token field, then with the token given works as without one,
    keeping the token for the tab."""
    image = draw_scene(str(tmp_path / "scene.png"))
    server, url = start_server(tiny_run["run"], str(tmp_path / "serve.log"), "--token", "s3cret")
    try:
        with Chromium(CHROMIUM, str(tmp_path / "profile"), str(tmp_path / "chromium.log")) as browser:
            browser.open(url)
            browser.wait_for("!document.getElementById('login').hidden && document.body.dataset.state === 'error'",
                             what="the token field")
            assert "needs its token" in browser.evaluate("document.getElementById('status').textContent")
            browser.type_into("#token", "s3cret")
            browser.evaluate("document.getElementById('sign-in').click()")
            browser.wait_for("document.getElementById('login').hidden && "
                             "document.querySelectorAll('#suggestions button').length === 5", what="the vocabulary")
            assert browser.evaluate("sessionStorage.getItem('ovml-serve-token')") == "s3cret"
            browser.upload("#file", image)
            browser.type_into("#labels", ", ".join(LABELS) + ", ")
            browser.wait_for("document.body.dataset.state === 'done'", timeout=60, what="the ranked labels")
            assert sorted(name for name, _ in browser.evaluate(RANKED)) == sorted(LABELS)
    finally:
        server.terminate()
        server.wait(timeout=30)
