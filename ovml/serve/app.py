"""The HTTP face of `Predictor.predict`: the page's files and one JSON endpoint, on the standard
library's threading HTTP server (no dependency; every asset is in the package, so it works offline).

    GET  /                 the page (static/index.html; static/app.js and static/style.css)
    GET  /api/info         the run: model, head, vocabulary offered, whether it draws attention maps
    POST /api/predict      multipart form: image (file), labels ("a, b"), top_k, alpha, attention,
                           threshold (a number, mcut, auto: calibrated probability >= 0.5, auto-f1)
                           -> {"labels": [{"name", "score"[, "probability"]}, ...]} as `ovml predict
                           --json` prints them

Every bad request is answered 4xx with {"error": "..."}; the server keeps serving. With a token
(`ServeConfig.token`), the API answers 401 to a request without it (the page asks for it once);
the page and its files are served to anyone. A server bound beyond loopback needs a token unless
`insecure`. Connections, the pool serving them and their deadlines: `connections.py`.
"""
from __future__ import annotations

import base64
import contextlib
import hmac
import io
import ipaddress
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler
from importlib import resources
from typing import Callable

from ..config import ServeConfig
from ..errors import UsageError
from .batcher import TowerBatcher
from .connections import DeadlineReader, PooledHTTPServer, body_deadline
from .forms import FormField, RequestError, parse_form

MAX_BODY = 32 * 1024 * 1024   # bytes of one request (an image of a few megapixels is far less)
MAX_LABELS = 1000             # label names in one request
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}


def static_file(name: str) -> bytes | None:
    """A file of ovml/serve/static, or None (names are plain file names: no folders, no '..')."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    path = resources.files("ovml.serve").joinpath("static").joinpath(name)
    return path.read_bytes() if path.is_file() else None


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class TaggingServer(PooledHTTPServer):
    """Serves one loaded tagger. With `batched` (as `ovml serve` runs) requests are answered side
    by side, the images of concurrent requests sharing the tower's passes (serve/batcher.py, set
    on the tagger until the server closes); without, predictions run one at a time."""

    def __init__(self, config: ServeConfig, tagger, log: Callable[[str], None] | None = None,
                 batched: bool = False):
        super().__init__((config.host, config.port), TaggingHandler, config.workers, config.waiting, config.timeout)
        self.token = config.token
        self.tagger = tagger
        self.batcher: TowerBatcher | None = None
        if batched:
            self.batcher = TowerBatcher(tagger.encode_images, config.max_batch, config.batch_wait_ms / 1000)
            tagger.encode_images = self.batcher.encode
        self.lock = contextlib.nullcontext() if batched else threading.Lock()
        self.log = log
        self.info = {"model": os.path.basename(tagger.backbone.name),
                     "head": os.path.basename(os.path.normpath(tagger.run or "")),
                     "attention": tagger.has_attention, "top_k": tagger.config.top_k,
                     "calibrated": tagger.run is not None or tagger.config.calibration is not None,
                     "vocabulary": tagger.vocabulary()}

    def server_close(self) -> None:
        """Close the socket, then stop the batcher once the requests it holds are answered."""
        super().server_close()
        if self.batcher is not None:
            self.tagger.encode_images = self.batcher.run
            self.batcher.close()
            self.batcher = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def number(fields: dict[str, FormField], name: str, kind: type, low, high):
    """An optional numeric field within [low, high] (None when absent: the tagger's default), or a 400
    naming it."""
    if name not in fields or not fields[name].text:
        return None
    try:
        value = kind(fields[name].text)
    except ValueError:
        raise RequestError(400, f"{name} must be a number, got {fields[name].text[:40]!r}") from None
    if not low <= value <= high:
        raise RequestError(400, f"{name} must lie in [{low}, {high}], got {value}")
    return value


def png_data_url(array) -> str:
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def attention_json(prediction, resolution: int) -> dict:
    """The image as CLIP saw it (a square PNG) and each predicted label's map, row-major (H, W)."""
    from ..predict.explain import center_square
    maps = prediction.attention                                              # (k, H, W)
    return {"view": png_data_url(center_square(prediction.picture, resolution)), "grid": list(maps.shape[1:]),
            "maps": [[round(float(v), 5) for v in label_map.ravel()] for label_map in maps]}


def predict_form(server: TaggingServer, fields: dict[str, FormField]) -> dict:
    """The endpoint's answer for a parsed form."""
    image = fields.get("image")
    if image is None or not image.value:
        raise RequestError(400, "no image: send the image file as the form field 'image'")
    labels = fields["labels"].text if "labels" in fields else ""
    names = [name for name in labels.split(",") if name.strip()]
    if not names:
        raise RequestError(400, "no labels: send label names, comma-separated, as the form field 'labels'")
    if len(names) > MAX_LABELS:
        raise RequestError(400, f"too many labels ({len(names)}; at most {MAX_LABELS} a request)")
    top_k = number(fields, "top_k", int, 1, MAX_LABELS)
    alpha = number(fields, "alpha", float, 0.0, 1.0)
    threshold = fields["threshold"].text.strip() if "threshold" in fields else ""   # read by predict's rule
    attention = "attention" in fields and fields["attention"].text.lower() in ("1", "true", "yes", "on")
    attention = attention and server.tagger.has_attention
    with server.lock:
        try:
            (prediction,) = server.tagger.predict([image.value], labels, top_k, alpha, batch_size=1,
                                                  attention=attention, threshold=threshold or None)
        except UsageError as err:
            raise RequestError(400, str(err)) from None
    if prediction.error:
        raise RequestError(400, f"image {image.filename!r}: {prediction.error}" if image.filename else
                           f"image: {prediction.error}")
    answer = {"labels": prediction.as_json()["labels"]}
    if attention:
        answer["attention"] = attention_json(prediction, server.tagger.backbone.input_resolution)
    return answer


class TaggingHandler(BaseHTTPRequestHandler):
    server: TaggingServer
    server_version = "ovml"

    def setup(self) -> None:
        """Reads go through a DeadlineReader, so a stalled client cannot hold this thread."""
        self.timeout = self.server.connection_timeout
        super().setup()
        self.rfile.close()
        self.reader = DeadlineReader(self.connection, self.timeout)
        self.rfile = io.BufferedReader(self.reader)

    def handle_one_request(self) -> None:
        self.reader.deadline = time.monotonic() + self.timeout    # for the request line and headers
        super().handle_one_request()

    def authorised(self, fields: dict[str, FormField] | None = None) -> bool:
        """Whether the request carries the server's token (always, when it has none)."""
        if self.server.token is None:
            return True
        expected = self.server.token.encode("utf-8")
        header = self.headers.get("Authorization", "")
        if header[:7].lower() == "bearer " and hmac.compare_digest(header[7:].strip().encode("utf-8"), expected):
            return True
        given = fields.get("token") if fields else None
        return given is not None and hmac.compare_digest(given.text.encode("utf-8"), expected)

    def refuse_unauthorised(self) -> None:
        self.close_connection = True
        self.send_json(401, {"error": "401 this server needs its token: send it as 'Authorization: Bearer TOKEN' "
                                      "or as the form field 'token'"})

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (a malformed request line, an unknown method) as JSON too."""
        short = message or self.responses.get(code, ("error",))[0]
        self.close_connection = True
        body = json.dumps({"error": f"{code} {short}"}).encode("utf-8")
        self.send_response(code, short)
        self.send_header("Connection", "close")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(body)

    def send_body(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status: int, payload: dict) -> None:
        self.send_body(status, json.dumps(payload).encode("utf-8"), "application/json")

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/api/info":
            if not self.authorised():
                self.refuse_unauthorised()
                return
            self.send_json(200, self.server.info)
            return
        name = "index.html" if path == "/" else path[len("/static/"):] if path.startswith("/static/") else ""
        body = static_file(name)
        if body is None:
            self.send_json(404, {"error": f"no page {path}"})
            return
        self.send_body(200, body, CONTENT_TYPES.get(os.path.splitext(name)[1], "application/octet-stream"))

    def do_POST(self) -> None:
        try:
            if self.path.split("?", 1)[0] != "/api/predict":
                raise RequestError(404, f"no endpoint {self.path}; POST /api/predict")
            if self.server.token is not None and "Authorization" in self.headers and not self.authorised():
                self.refuse_unauthorised()                        # a wrong token: the body is not read
                return
            fields = parse_form(self.headers.get("Content-Type"), self.read_body())
            if not self.authorised(fields):
                self.refuse_unauthorised()
                return
            self.send_json(200, predict_form(self.server, fields))
        except RequestError as err:
            self.send_json(err.status, {"error": err.message})
        except Exception as err:  # a bug must not stop the server: say so, keep serving
            self.log_message("error: %s: %s", type(err).__name__, err)
            self.send_json(500, {"error": f"internal error ({type(err).__name__})"})

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise RequestError(411, "send a Content-Length (chunked bodies are not read)")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.close_connection = True
            raise RequestError(411, "a POST needs a Content-Length") from None
        if length > MAX_BODY:
            self.close_connection = True   # the unread body must not be taken for the next request
            raise RequestError(413, f"the body is {length} bytes; at most {MAX_BODY}")
        self.reader.deadline = body_deadline(length, self.timeout)
        try:
            body = self.rfile.read(length) if length > 0 else b""
        except TimeoutError:
            self.close_connection = True
            raise RequestError(408, f"the body did not arrive in time ({length} bytes announced)") from None
        self.connection.settimeout(self.timeout)                   # for the answer
        return body

    def log_message(self, format: str, *args) -> None:
        if self.server.log is not None:
            self.server.log(f"{self.address_string()} {format % args}")


def check_exposure(config: ServeConfig) -> None:
    """Refuse to bind beyond loopback with no token, unless `insecure` says so."""
    if not is_loopback(config.host) and not config.token and not config.insecure:
        raise UsageError(f"--host {config.host}: anyone who can reach this machine could use the server; give "
                         "--token TOKEN (or $OVML_SERVE_TOKEN), or pass --insecure to serve without one")


def make_server(tagger, config: ServeConfig, log: Callable[[str], None] | None = None,
                batched: bool = False) -> TaggingServer:
    """A server for `tagger` (a loaded `Predictor`) bound to `config`'s host and port (0: any free
    one); `batched` answers requests side by side, their images batched through the tower."""
    check_exposure(config)
    return TaggingServer(config, tagger, log, batched)
