"""Connections of `ovml serve` under load: a listen backlog sized for real clients, a bounded pool
of connection threads, and deadlines, so that slow or stalled clients cannot hold the server.

- The kernel queues up to `LISTEN_BACKLOG` connections not yet accepted (the standard library's
  default of 5 turned a burst of clients into connection resets).
- Each accepted connection is served by one thread, at most `workers` at a time; beyond that it
  waits in a queue of `waiting` connections, and beyond that it is answered `503` with
  `Retry-After` (and its request drained before the close, so the client reads the answer rather
  than a reset).
- A request's line and headers must arrive within `timeout` seconds (also the time an idle
  keep-alive connection is kept); its body may fall silent for at most `timeout` seconds and must
  arrive within `timeout` plus one second per `MIN_UPLOAD_RATE` bytes. A client past either is
  disconnected (`408` for a body), freeing its thread.
"""
from __future__ import annotations

import collections
import io
import json
import socket
import sys
import threading
import time
from http.server import HTTPServer

LISTEN_BACKLOG = 256            # connections the kernel holds before they are accepted
MIN_UPLOAD_RATE = 64 * 1024     # bytes per second a request body must at least arrive at
DRAIN_BYTES = 1 << 20           # at most this much of a refused request is read before closing
DRAIN_SECONDS = 2.0


class DeadlineReader(io.RawIOBase):
    """A socket's bytes, each read waiting at most `idle` seconds and none past `deadline`."""

    def __init__(self, connection: socket.socket, idle: float):
        self.connection, self.idle = connection, idle
        self.deadline: float | None = None            # time.monotonic() by which reading must end

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        wait = self.idle if self.deadline is None else min(self.idle, self.deadline - time.monotonic())
        if wait <= 0:
            raise TimeoutError("the client did not send in time")
        self.connection.settimeout(wait)
        return self.connection.recv_into(buffer)


def body_deadline(length: int, timeout: float) -> float:
    """When a body of `length` bytes must have arrived, counted from now."""
    return time.monotonic() + timeout + length / MIN_UPLOAD_RATE


def busy_answer() -> bytes:
    """The whole 503 answer given when every worker is busy and the queue is full."""
    body = json.dumps({"error": "503 the server is busy; retry in a second"}).encode("utf-8")
    return (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def refuse(connection: socket.socket) -> None:
    """Answer 503 and close without a reset: the answer is sent, the sending side shut, and what the
    client sent read (briefly) before the close, as a close over unread bytes would reset."""
    try:
        connection.settimeout(DRAIN_SECONDS)
        connection.sendall(busy_answer())
        connection.shutdown(socket.SHUT_WR)
        ends, drained = time.monotonic() + DRAIN_SECONDS, 0
        while drained < DRAIN_BYTES and time.monotonic() < ends:
            chunk = connection.recv(65536)
            if not chunk:
                break
            drained += len(chunk)
    except OSError:
        pass
    finally:
        connection.close()


class PooledHTTPServer(HTTPServer):
    """An HTTPServer serving each connection on a thread of a bounded pool (see the module)."""

    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address, handler, workers: int, waiting: int, timeout: float):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)
        self.workers, self.waiting_limit, self.connection_timeout = workers, waiting, timeout
        self.busy = 0                                     # threads serving a connection now
        self.waiting: collections.deque = collections.deque()
        self.guard = threading.Lock()

    def process_request(self, request, client_address) -> None:
        """Called by serve_forever for each accepted connection: serve, queue or refuse it."""
        with self.guard:
            if self.busy < self.workers:
                self.busy += 1
                threading.Thread(target=self.serve_connections, args=(request, client_address), daemon=True).start()
                return
            if len(self.waiting) < self.waiting_limit:
                self.waiting.append((request, client_address))
                return
        threading.Thread(target=refuse, args=(request,), daemon=True).start()

    def handle_error(self, request, client_address) -> None:
        """A client that left or stalled is no error of the server's: nothing to print."""
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)

    def server_close(self) -> None:
        super().server_close()
        with self.guard:
            while self.waiting:
                self.waiting.popleft()[0].close()

    def serve_connections(self, request, client_address) -> None:
        """One worker: serve this connection, then the queued ones, then end."""
        while True:
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)
            with self.guard:
                if not self.waiting:
                    self.busy -= 1
                    return
                request, client_address = self.waiting.popleft()
