"""Frame reads from S3: the naive notebook way vs this project vs the floor, side by side.

Run by hand (takes a few minutes, writes ~3.5 GB of test stacks to --data once)::

    .venv/bin/python -m benchmarks.bench_frames [--data /tmp/echo-bench] [--quick]

A local read-only S3 server (:mod:`benchmarks.s3_range_server`) serves the stacks from disk
(byte ranges read from disk, unlike moto); every method runs once against it directly ("plain")
and once through :mod:`benchmarks.latency_proxy` adding 20 ms per request ("20 ms"), like a
remote ECHO. Requests and bytes are counted by the server itself.

Methods
-------
naive
    ``h5py.File(s3fs.S3FileSystem(...).open(url))`` with s3fs defaults (50 MiB read-ahead), the
    stack found with ``visititems``, then ``dset[i]``.
s3fs tuned
    The same with the metadata tuned: s3fs ``cache_type="blockcache"``, 256 KiB blocks, stack
    found by known paths; frames still through h5py (so through s3fs blocks).
project
    :func:`dashboard.open_stack` (block-cached metadata, direct chunk GETs, Python decoding).
floor
    One raw ranged GET of exactly the frame's chunk bytes (offsets looked up beforehand, not
    timed) plus the decode: nothing can be faster over the same connection.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

from benchmarks.latency_proxy import LatencyProxy
from benchmarks.s3_range_server import RangeServer
from dashboard.hdf5.chunks import LRUBytes
from dashboard.hdf5.decode import decode_chunk, pipeline
from dashboard.hdf5.stack import open_stack
from dashboard.storage.credentials import Credentials
from dashboard.storage.s3 import S3

BUCKET = "bench"
CREDENTIALS = Credentials(access_key="BENCHACCESSKEY", secret_key="bench-secret-key-0000",
                          source="benchmark")
LAYOUTS = {
    "bslz4": ("Bitshuffle-LZ4, 1 frame/chunk", lambda h, w: {"chunks": (1, h, w), **hdf5plugin.Bitshuffle(cname="lz4")}),
    "gzip": ("gzip(4)+shuffle, 1 frame/chunk", lambda h, w: {"chunks": (1, h, w), "compression": "gzip", "shuffle": True}),
    "contig": ("contiguous, uncompressed", lambda h, w: {}),
}
SIZES = {1024: 500, 2048: 60}  # frame edge -> frames (1024²: the 500-frame stack)


def make_stack(path: Path, edge: int, n: int, layout: str) -> None:
    """A synthetic radiograph stack (smooth object, Poisson noise) at /entry/data/data."""
    rng = np.random.default_rng(edge)
    y, x = np.mgrid[0:edge, 0:edge].astype(np.float32) / edge
    flat = 3000 * (1 - 0.3 * ((x - 0.5) ** 2 + (y - 0.5) ** 2))
    noise = [rng.poisson(flat).astype(np.float32) - flat for _ in range(4)]
    kwargs = LAYOUTS[layout][1](edge, edge)
    tmp = path.with_suffix(".tmp")
    with h5py.File(tmp, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        for k in range(5):  # some metadata around the stack, as in real NeXus files
            entry.create_dataset(f"instrument/motor{k}", data=np.linspace(0, 180, n))
        d = f.create_dataset("entry/data/data", shape=(n, edge, edge), dtype="uint16", **kwargs)
        for i in range(n):
            angle = i / n * np.pi
            sample = 1 - 0.6 * np.exp(-(((x - 0.5 - 0.2 * np.cos(angle)) ** 2 + (y - 0.5) ** 2) / 0.02))
            d[i] = np.clip(flat * sample + noise[i % 4] * np.sqrt(sample), 0, 65535).astype(np.uint16)
    tmp.rename(path)


def ensure_data(root: Path, sizes: dict) -> list[tuple[str, int, str]]:
    folder = root / BUCKET
    folder.mkdir(parents=True, exist_ok=True)
    stacks = []
    for edge, n in sizes.items():
        for layout in LAYOUTS:
            key = f"stack_{edge}_{layout}.h5"
            if not (folder / key).exists():
                print(f"writing {key} ...", flush=True)
                make_stack(folder / key, edge, n, layout)
            stacks.append((key, edge, layout))
    return stacks


def chunk_table(path: Path) -> dict:
    """Frame -> (offset, nbytes, mask) of its chunk, plus what decoding needs (read locally)."""
    with h5py.File(path) as f:
        d = f["/entry/data/data"]
        info = {"dtype": d.dtype, "shape": d.shape, "chunks": d.chunks, "filters": pipeline(d)}
        if d.chunks is None:
            nbytes = d.shape[1] * d.shape[2] * d.dtype.itemsize
            base = d.id.get_offset()
            info["frames"] = {i: (base + i * nbytes, nbytes, 0) for i in range(d.shape[0])}
        else:
            info["frames"] = {}
            for i in range(d.shape[0]):
                c = d.id.get_chunk_info_by_coord((i, 0, 0))
                info["frames"][i] = (c.byte_offset, c.size, c.filter_mask)
    return info


class Counter:
    def __init__(self, server: RangeServer):
        self.server = server
        self.mark()

    def mark(self) -> None:
        self._start = self.server.counts()

    def delta(self) -> tuple[int, int]:
        now = self.server.counts()
        requests = sum(now.get(m, 0) - self._start.get(m, 0) for m in ("GET", "HEAD"))
        return requests, now["bytes"] - self._start["bytes"]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def summarize(latencies: list[float]) -> dict:
    ordered = sorted(latencies)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return {"median_ms": _ms(statistics.median(ordered)), "p90_ms": _ms(p90)}


def bench_naive(endpoint: str, key: str, indices: list[int], counter: Counter) -> dict:
    import s3fs

    counter.mark()
    t0 = time.perf_counter()
    fs = s3fs.S3FileSystem(key=CREDENTIALS.access_key, secret=CREDENTIALS.secret_key,
                           endpoint_url=endpoint, skip_instance_cache=True)
    handle = fs.open(f"{BUCKET}/{key}", "rb")
    f = h5py.File(handle, "r")
    found = []
    f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) and obj.ndim == 3 else None)
    dset = f[found[0]]
    dset[0]
    open_s = time.perf_counter() - t0
    open_requests, open_bytes = counter.delta()
    latencies = []
    counter.mark()
    for i in indices:
        t = time.perf_counter()
        dset[i]
        latencies.append(time.perf_counter() - t)
    requests, nbytes = counter.delta()
    f.close()
    handle.close()
    return {"open_ms": _ms(open_s), "open_requests": open_requests, "open_MB": round(open_bytes / 1e6, 2),
            **summarize(latencies), "gets_per_frame": round(requests / len(indices), 2),
            "MB_per_frame": round(nbytes / len(indices) / 1e6, 3)}


def bench_s3fs_tuned(endpoint: str, key: str, indices: list[int], counter: Counter) -> dict:
    """The notebook way with metadata tuned: s3fs blockcache of 256 KiB, stack by known path,
    frames still through h5py (so through s3fs blocks)."""
    import s3fs

    from dashboard.hdf5.stacks import default_stack

    counter.mark()
    t0 = time.perf_counter()
    fs = s3fs.S3FileSystem(key=CREDENTIALS.access_key, secret=CREDENTIALS.secret_key,
                           endpoint_url=endpoint, skip_instance_cache=True)
    handle = fs.open(f"{BUCKET}/{key}", "rb", block_size=256 * 1024, cache_type="blockcache")
    f = h5py.File(handle, "r")
    dset = f[default_stack(f)]
    dset[0]
    open_s = time.perf_counter() - t0
    open_requests, open_bytes = counter.delta()
    latencies = []
    counter.mark()
    for i in indices:
        t = time.perf_counter()
        dset[i]
        latencies.append(time.perf_counter() - t)
    requests, nbytes = counter.delta()
    f.close()
    handle.close()
    return {"open_ms": _ms(open_s), "open_requests": open_requests, "open_MB": round(open_bytes / 1e6, 2),
            **summarize(latencies), "gets_per_frame": round(requests / len(indices), 2),
            "MB_per_frame": round(nbytes / len(indices) / 1e6, 3)}


def floor_read(client, key: str, table: dict, i: int) -> None:
    """One raw ranged GET of exactly frame i's chunk bytes + decode."""
    offset, nbytes, mask = table["frames"][i]
    data = client.get_object(Bucket=BUCKET, Key=key,
                             Range=f"bytes={offset}-{offset + nbytes - 1}")["Body"].read()
    if table["chunks"] is None:
        edge = table["shape"][1]
        np.frombuffer(data, table["dtype"]).reshape(edge, edge)
    else:
        decode_chunk(data, table["filters"], mask, table["dtype"], table["chunks"])


def bench_project_and_floor(endpoint: str, key: str, indices: list[int], counter: Counter,
                            stored: float, table: dict) -> tuple[dict, dict]:
    """This project and the floor, interleaved frame by frame (same load on the shared cores)."""
    s3 = S3(endpoint, CREDENTIALS)
    s3.client  # noqa: B018  (build the client before timing: a session-long object)
    floor_client = S3(endpoint, CREDENTIALS).client
    floor_client.head_object(Bucket=BUCKET, Key=key)  # warm the floor's connection
    counter.mark()
    t0 = time.perf_counter()
    stack = open_stack(f"s3://{BUCKET}/{key}", s3=s3, prefetch=False, cache=LRUBytes(1 << 30))
    stack.frame(0)
    open_s = time.perf_counter() - t0
    open_requests, open_bytes = counter.delta()
    stack.wait_index(60)
    latencies, floor_latencies = [], []
    requests = nbytes = floor_requests = floor_bytes = 0
    for i in indices:
        counter.mark()
        t = time.perf_counter()
        stack.frame(i)
        latencies.append(time.perf_counter() - t)
        r, b = counter.delta()
        requests, nbytes = requests + r, nbytes + b
        counter.mark()
        t = time.perf_counter()
        floor_read(floor_client, key, table, i)
        floor_latencies.append(time.perf_counter() - t)
        r, b = counter.delta()
        floor_requests, floor_bytes = floor_requests + r, floor_bytes + b
    stack.close()
    floor = {**summarize(floor_latencies), "gets_per_frame": round(floor_requests / len(indices), 2),
             "MB_per_frame": round(floor_bytes / len(indices) / 1e6, 3)}

    # scrubbing: step through frames with prefetch on; time each step after prefetch settled,
    # and a fast drag (no pause between frames)
    stack = open_stack(f"s3://{BUCKET}/{key}", s3=s3, prefetch=True, cache=LRUBytes(1 << 30))
    stack.frame(1)
    stack.wait_index(60)
    stack.wait_prefetch(60)
    settled = []
    for i in range(2, 12):
        t = time.perf_counter()
        stack.frame(i)
        settled.append(time.perf_counter() - t)
        stack.wait_prefetch(60)
    drag = []
    for i in range(12, 32):
        t = time.perf_counter()
        stack.frame(i)
        drag.append(time.perf_counter() - t)
    stack.close()

    # batch throughput: frames() reads ahead with parallel direct GETs
    stack = open_stack(f"s3://{BUCKET}/{key}", s3=s3, prefetch=False, cache=LRUBytes(1 << 20))
    stack.frame(0)
    stack.wait_index(60)
    t = time.perf_counter()
    count = sum(1 for _ in stack.frames(range(1, min(len(stack), 33))))
    fps = count / (time.perf_counter() - t)
    stack.close()
    project = {"open_ms": _ms(open_s), "open_requests": open_requests,
               "open_MB": round(open_bytes / 1e6, 2),
               **summarize(latencies), "gets_per_frame": round(requests / len(indices), 2),
               "MB_per_frame": round(nbytes / len(indices) / 1e6, 3),
               "bytes_vs_chunk": round(nbytes / len(indices) / stored, 3),
               "scrub_prefetched_median_ms": _ms(statistics.median(settled)),
               "scrub_prefetched_max_ms": _ms(max(settled)),
               "scrub_drag_median_ms": _ms(statistics.median(drag)),
               "batch_frames_per_s": round(fps, 1)}
    return project, floor


def main() -> None:
    parser = argparse.ArgumentParser(description="Frame-read benchmark (see module docstring)")
    parser.add_argument("--data", default="/tmp/echo-bench")
    parser.add_argument("--frames", type=int, default=20, help="random frames per method")
    parser.add_argument("--naive-frames", type=int, default=6)
    parser.add_argument("--delay", type=float, default=0.020)
    parser.add_argument("--quick", action="store_true", help="1024² only")
    parser.add_argument("--json", default="benchmarks/bench_frames.json")
    args = parser.parse_args()
    sizes = {1024: SIZES[1024]} if args.quick else SIZES
    root = Path(args.data)
    stacks = ensure_data(root, sizes)
    results = []
    with RangeServer(root) as server:
        counter = Counter(server)
        with LatencyProxy(server.endpoint, delay=args.delay) as proxy:
            for key, edge, layout in stacks:
                path = root / BUCKET / key
                table = chunk_table(path)
                n = table["shape"][0]
                rng = random.Random(edge * 7 + len(layout))
                indices = rng.sample(range(1, n), min(args.frames, n - 1))
                stored = statistics.mean(table["frames"][i][1] for i in indices)
                for network, endpoint in (("plain", server.endpoint), (f"{args.delay * 1000:.0f} ms", proxy.endpoint)):
                    row = {"stack": f"{edge}² {LAYOUTS[layout][0]}", "frames": n,
                           "file_MB": round(path.stat().st_size / 1e6, 1),
                           "chunk_MB": round(stored / 1e6, 3), "network": network}
                    print(f"{row['stack']} [{network}] ...", flush=True)
                    row["naive"] = bench_naive(endpoint, key, indices[: args.naive_frames], counter)
                    row["s3fs tuned"] = bench_s3fs_tuned(endpoint, key, indices[: args.naive_frames], counter)
                    row["project"], row["floor"] = bench_project_and_floor(
                        endpoint, key, indices, counter, stored, table)
                    print(json.dumps(row), flush=True)
                    results.append(row)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, Python {platform.python_version()}",
            "h5py": h5py.version.version, "hdf5": h5py.version.hdf5_version}
    Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(markdown(meta, results))


def markdown(meta: dict, results: list[dict]) -> str:
    lines = [
        f"Run {meta['date']} on {meta['machine']} (h5py {meta['h5py']}, HDF5 {meta['hdf5']}).",
        "",
        "| stack | network | method | open to 1st frame | open GETs / MB | random frame median / p90 | GETs / frame | MB / frame | scrub (prefetched) | scrub (drag) | batch frames/s |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in results:
        for method in ("naive", "s3fs tuned", "project", "floor"):
            r = row[method]
            opened = f"{r['open_ms']:.0f} ms" if "open_ms" in r else "–"
            open_cost = f"{r['open_requests']} / {r['open_MB']}" if "open_ms" in r else "–"
            lines.append(
                f"| {row['stack']} ({row['chunk_MB']} MB/chunk) | {row['network']} | {method} | {opened} | {open_cost} "
                f"| {r['median_ms']} / {r['p90_ms']} ms | {r['gets_per_frame']} | {r['MB_per_frame']} "
                f"| {r.get('scrub_prefetched_median_ms', '–')}{' ms' if 'scrub_prefetched_median_ms' in r else ''} "
                f"| {r.get('scrub_drag_median_ms', '–')}{' ms' if 'scrub_drag_median_ms' in r else ''} "
                f"| {r.get('batch_frames_per_s', '–')} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
