"""`ovml serve` under load, on loopback with bounded counts and a time limit: a burst of clients
all answered (the listen backlog, the worker pool), idle and stalled connections that cannot hold
the server (deadlines), 503 with Retry-After beyond the queue, and the token."""
from __future__ import annotations

import http.client
import io
import json
import socket
import statistics
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import ovml
from ovml.cli import main
from ovml.config import ServeConfig
from ovml.errors import UsageError
from ovml.serve.app import is_loopback, make_server

BOUNDARY = "ovml-load-boundary"
CLIENTS, REQUESTS = 64, 8
IDLE, STALLED = 200, 64
LIMIT_SECONDS = 120


@pytest.fixture(scope="module")
def tagger(tiny_run):
    return ovml.load_tagger(tiny_run["run"])


def start(tagger, batched: bool = False, **options):
    server = make_server(tagger, ServeConfig(port=0, **options), batched=batched)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def stop(server) -> None:
    server.shutdown()
    server.server_close()


def small_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def form(fields: dict[str, str], image: bytes) -> bytes:
    parts = [f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
                 "Content-Type: image/png\r\n\r\n".encode() + image + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


FORM_TYPE = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def ask(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None, timeout=30):
    """(status, headers, parsed JSON) of one request on a new connection."""
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read() or b"null")
    finally:
        connection.close()


@pytest.mark.parametrize("batched", [False, True], ids=["one at a time", "batched as ovml serve runs"])
def test_a_burst_of_clients_is_answered_in_full(tagger, batched):
    """64 clients x 8 requests at once: every one 200, each the single request's answer (the
    standard library's backlog of 5 reset one connection in 128 under 32 clients)."""
    server = start(tagger, batched)
    body = form({"labels": "red square, green disc, cat", "top_k": "3"}, small_png())
    try:
        single = ask(server, "POST", "/api/predict", body, FORM_TYPE)
        assert single[0] == 200, single
        results: list = []
        barrier = threading.Barrier(CLIENTS)

        def client() -> None:
            barrier.wait()
            for _ in range(REQUESTS):
                started = time.perf_counter()
                try:
                    status, _, answer = ask(server, "POST", "/api/predict", body, FORM_TYPE, timeout=LIMIT_SECONDS)
                except OSError as err:
                    status, answer = type(err).__name__, None
                results.append((status, answer, time.perf_counter() - started))

        began = time.perf_counter()
        threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(0.1, began + LIMIT_SECONDS - time.perf_counter()))
        seconds = time.perf_counter() - began
    finally:
        stop(server)
    assert len(results) == CLIENTS * REQUESTS, f"{len(results)} of {CLIENTS * REQUESTS} answered in {LIMIT_SECONDS} s"
    wrong = [(status, answer) for status, answer, _ in results if status != 200 or answer != single[2]]
    assert not wrong, wrong[:3]
    latencies = sorted(latency for _, _, latency in results)
    print(f"\nserve load ({'batched' if batched else 'one at a time'}): {CLIENTS} clients x {REQUESTS} requests, "
          "all 200 and identical; "
          f"p50 {1000 * statistics.median(latencies):.0f} ms, "
          f"p99 {1000 * latencies[int(0.99 * len(latencies)) - 1]:.0f} ms, "
          f"{len(results) / seconds:.1f} requests/s")


def open_socket(server) -> socket.socket:
    return socket.create_connection(server.server_address[:2], timeout=10)


def stalled_upload(server) -> socket.socket:
    """A POST that announces a body, sends a little of it and then nothing."""
    connection = open_socket(server)
    connection.sendall(f"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: {FORM_TYPE['Content-Type']}\r\n"
                       "Content-Length: 100000\r\n\r\n".encode() + b"--" + BOUNDARY.encode())
    return connection


def test_idle_and_stalled_connections_do_not_hold_the_server(tagger):
    """With 200 idle sockets and 64 stalled uploads open, a new request is still answered."""
    server = start(tagger)
    body = form({"labels": "cat, dog"}, small_png())
    held = []
    try:
        held += [open_socket(server) for _ in range(IDLE)]
        held += [stalled_upload(server) for _ in range(STALLED)]
        started = time.perf_counter()
        status, _, answer = ask(server, "POST", "/api/predict", body, FORM_TYPE)
        assert status == 200 and len(answer["labels"]) == 2
        assert time.perf_counter() - started < 5
    finally:
        for connection in held:
            connection.close()
        stop(server)


def read_answer(connection: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = connection.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_beyond_the_queue_503_and_stalled_clients_are_cut_off(tagger):
    """A pool of 2 workers and a queue of 1: the fourth connection is answered 503 with
    Retry-After (read in full, not reset); the stalled ones are cut off after the timeout, so the
    server serves again."""
    server = start(tagger, workers=2, waiting=1, timeout=1.0)
    body = form({"labels": "cat"}, small_png())
    try:
        stalled = [stalled_upload(server) for _ in range(2)]
        idle = open_socket(server)
        time.sleep(0.2)
        extra = open_socket(server)
        extra.sendall(b"GET /api/info HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_answer(extra).decode()
        assert answer.startswith("HTTP/1.1 503") and "Retry-After: 1" in answer and "busy" in answer
        for connection in stalled:                      # 408 once the body stops arriving
            assert read_answer(connection).startswith(b"HTTP/1.0 408")
        assert read_answer(idle) == b""                 # no request line within the timeout: closed
        assert ask(server, "POST", "/api/predict", body, FORM_TYPE)[0] == 200
    finally:
        stop(server)


def test_a_token_guards_the_api_not_the_page(tagger):
    server = start(tagger, token="s3cret")
    body = {"labels": "cat"}
    image = small_png()
    try:
        assert ask(server, "GET", "/api/info")[0] == 401
        assert ask(server, "GET", "/api/info", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert ask(server, "GET", "/api/info", headers={"Authorization": "Bearer s3cret"})[0] == 200
        assert ask(server, "POST", "/api/predict", form(body, image), FORM_TYPE)[0] == 401
        assert ask(server, "POST", "/api/predict", form(body, image),
                   FORM_TYPE | {"Authorization": "Bearer s3cret"})[0] == 200
        assert ask(server, "POST", "/api/predict", form(body | {"token": "s3cret"}, image), FORM_TYPE)[0] == 200
        connection = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
        connection.request("GET", "/")
        page = connection.getresponse()
        assert page.status == 200 and b'id="token"' in page.read()
        connection.close()
    finally:
        stop(server)


def test_binding_beyond_loopback_needs_a_token(tagger):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.org")
    with pytest.raises(UsageError, match="--token"):
        make_server(tagger, ServeConfig(host="0.0.0.0", port=0))
    refused = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0", "--port", "0"])
    assert refused.exit_code == 1 and "--token TOKEN (or $OVML_SERVE_TOKEN), or pass --insecure" in refused.output
    for options in ({"token": "t"}, {"insecure": True}):
        make_server(tagger, ServeConfig(host="0.0.0.0", port=0, **options)).server_close()
