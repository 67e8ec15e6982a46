"""B11: serving throughput. Requests/s of `ovml serve`'s JSON endpoint with 16 concurrent
loopback clients over one client, the server batching the images that wait (serve/batcher.py);
beside it, 16 clients against the same server answering one request at a time (no batching).
Random-weight CLIP (RN50 shapes by default), CLIP-ML alone, photo-like JPEGs of real sizes.

    python -m benchmarks.speed.b11_serve                      # RN50 shapes, CPU
    python -m benchmarks.speed.b11_serve --shape tiny --requests 32 --reps 2
    python -m benchmarks.speed.b11_serve --gpu

Each repetition runs the arms back to back (one client; 16 clients batched; 16 clients one at a
time); a rate is the median over repetitions. Every client sends the same label list; each
request carries one image.
"""
from __future__ import annotations

import argparse
import http.client
import io
import statistics
import tempfile
import threading
import time

from benchmarks.common import photo_like, random_clip_file, write_figures
from ovml.config import PredictConfig, ServeConfig
from ovml.predict.predictor import Predictor
from ovml.serve.app import make_server

BOUNDARY = "b11-boundary"
LABELS = "dog, cat, beach, sunset, car, tree, person, building"


def form(image: bytes) -> bytes:
    """A multipart body with the image and the labels."""
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"labels\"\r\n\r\n{LABELS}\r\n"
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"photo.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()
    return head + image + f"\r\n--{BOUNDARY}--\r\n".encode()


def client(port: int, bodies: list[bytes]) -> None:
    """POST every body over one keep-alive connection; each answer must be a 200."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    for body in bodies:
        connection.request("POST", "/api/predict", body, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
        answer = connection.getresponse()
        payload = answer.read()
        if answer.status != 200:
            raise SystemExit(f"server answered {answer.status}: {payload[:200]!r}")
    connection.close()


def requests_per_second(port: int, bodies: list[bytes], clients: int) -> float:
    """All `bodies` sent by `clients` concurrent clients (an even share each); requests/s. A
    client whose connection fails stops the benchmark."""
    shares = [bodies[i::clients] for i in range(clients)]
    failures = []

    def run(share: list[bytes]) -> None:
        try:
            client(port, share)
        except (OSError, SystemExit) as err:
            failures.append(err)

    threads = [threading.Thread(target=run, args=(share,)) for share in shares]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise SystemExit(f"{len(failures)} of {clients} clients failed: {failures[0]!r}")
    return len(bodies) / (time.perf_counter() - started)


def serving(tagger: Predictor, config: ServeConfig, batched: bool):
    """A server on a free loopback port, serving in a background thread."""
    server = make_server(tagger, config, batched=batched)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="rn50")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=64, help="requests per arm and repetition")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--wait-ms", type=float, default=5.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tagger = Predictor(PredictConfig(model=random_clip_file(folder, args.shape),
                                         device="cuda:0" if args.gpu else "cpu"))
    bodies = []
    for i in range(args.requests):
        buffer = io.BytesIO()
        photo_like(((640, 480), (500, 375), (480, 640))[i % 3], seed=i).save(buffer, format="JPEG", quality=90)
        bodies.append(form(buffer.getvalue()))
    config = ServeConfig(port=0, max_batch=args.max_batch, batch_wait_ms=args.wait_ms)
    batched, locked = serving(tagger, config, batched=True), serving(tagger, config, batched=False)
    batcher = batched.batcher
    arms = {"1 client": (batched, 1), f"{args.clients} clients, batched": (batched, args.clients),
            f"{args.clients} clients, one at a time": (locked, args.clients)}
    requests_per_second(batched.server_address[1], bodies[:args.clients], args.clients)   # warm-up
    rates = {name: [] for name in arms}
    for _ in range(args.reps):
        for name, (server, clients) in arms.items():
            before = (batcher.batches, batcher.images)
            rates[name].append(requests_per_second(server.server_address[1], bodies, clients))
            if name.endswith("batched"):
                batches = batcher.batches - before[0]
                print(f"  {name}: {batcher.images - before[1]} images in {batches} tower passes")
    for server in (batched, locked):
        server.shutdown()
        server.server_close()
    median = {name: statistics.median(values) for name, values in rates.items()}
    device = "cuda:0" if args.gpu else f"CPU ({tagger.backbone.describe()['precision']})"
    for name, rate in median.items():
        print(f"{name:32s} {rate:7.2f} requests/s")
    write_figures(args.json, {"b11_serve": {"shape": args.shape, "device": device, "rates": median}})
    ratio = median[f"{args.clients} clients, batched"] / median["1 client"]
    print(f"RATIO B11 {ratio:.2f} requests/s of {args.clients} concurrent clients over one ({args.shape} shapes on "
          f"{device}, max batch {args.max_batch}, {args.wait_ms:g} ms window, {args.requests} requests, median of "
          f"{args.reps})")


if __name__ == "__main__":
    main()
