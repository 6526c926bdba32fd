"""Hostile input: hundreds of corrupted copies of small valid HDF5 files through open, tree and
frame reads. Only the project's own exceptions may come out; no hang, no crash.

Each input runs in a worker subprocess (two of them, fed one path at a time) so that a
segfault or an abort inside libhdf5 is seen as a dead worker instead of killing pytest; a
worker that dies or hangs is restarted and the input recorded. The mutations come from a
seeded :class:`random.Random`, so every run tries the same inputs.
"""

from __future__ import annotations

import json
import os
import random
import selectors
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest
from conftest import ACCESS_KEY, SECRET_KEY

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parent.parent
#: Small inputs that once escaped with a non-EchoError (h5py RuntimeError/KeyError); kept as
#: regression inputs. All made from this file's own synthetic seeds (no third-party bytes).
CRASHERS = Path(__file__).parent / "data" / "crashers"
SEED = 20261124
MUTANTS_PER_SEED = 26
PER_INPUT_TIMEOUT = 20.0  # s; a healthy probe of these tiny files takes well under 1 s
SHARED_SEEDS = ["bshuf.h5", "compound.h5", "lz4.h5", "blosc2.h5", "scalar.h5", "zstd_uint8.h5",
                "empty.h5"]

# The worker: one JSON line in (a path or s3:// URL), one JSON line out per input.
WORKER = r"""
import json, os, sys
# Answers go to a private copy of stdout; C code that prints (some filter plugins do) lands
# on stderr instead of corrupting the protocol.
answers = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)
import numpy as np
from dashboard.errors import EchoError
from dashboard.hdf5.chunks import LRUBytes
from dashboard.hdf5.source import open_source
from dashboard.hdf5.stack import open_stack
from dashboard.hdf5.describe import describe
from dashboard.hdf5.tree import children

s3 = None
if os.environ.get("FUZZ_ENDPOINT"):
    from dashboard.storage.credentials import Credentials
    from dashboard.storage.s3 import S3
    s3 = S3(os.environ["FUZZ_ENDPOINT"], Credentials(
        access_key=os.environ["FUZZ_ACCESS"], secret_key=os.environ["FUZZ_SECRET"],
        source="fuzz"), connect_timeout=2, read_timeout=5, max_attempts=2)

def step(name, fn, outcome):
    try:
        fn()
        outcome[name] = "ok"
    except EchoError as exc:
        text = str(exc)
        bad = "\n" in text or "Traceback" in text or not text or len(text) > 600
        label = "bad-message " if bad else "echo "
        outcome[name] = label + type(exc).__name__ + ": " + text[:300]
    except Exception as exc:
        outcome[name] = "other " + type(exc).__name__ + ": " + str(exc)[:300]

def probe(target):
    outcome = {}
    info = {}
    def do_describe():
        info.update(describe(target, s3=s3))
    def do_children():
        source = open_source(target, s3=s3)
        try:
            for node in children(source, "/"):
                if node.kind == "group":
                    children(source, node.path)
        finally:
            source.close()
    def do_frames():
        with open_stack(target, s3=s3, prefetch=False, cache=LRUBytes(0)) as stack:
            for i in sorted({0, len(stack) // 2, len(stack) - 1}):
                frame = stack.frame(i)
                if frame.shape != tuple(stack.shape[-2:]) or frame.dtype != stack.dtype:
                    raise AssertionError(f"garbage frame {frame.shape} {frame.dtype}")
            stack.mean(range(min(len(stack), 3)))
    step("describe", do_describe, outcome)
    step("children", do_children, outcome)
    step("frames", do_frames, outcome)
    return outcome

for line in sys.stdin:
    target = json.loads(line)
    if target == "!segfault":  # the harness's own test: crash like libhdf5 could
        import ctypes
        ctypes.string_at(0)
    if target == "!hang":
        import time
        time.sleep(3600)
    print(json.dumps(probe(target)), file=answers, flush=True)
"""


# -- inputs --------------------------------------------------------------------------------------


def _tiny_seeds(folder: Path) -> list[Path]:
    """Small files covering the layouts and superblock versions the dashboard meets."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 4000, size=(5, 16, 24), dtype=np.uint16)
    made = []

    def make(name, **kw):
        path = folder / name
        made.append(path)
        return h5py.File(path, "w", **kw)

    with make("bslz4.h5") as f:
        f.create_dataset("/entry/data/data", data=data, chunks=(1, 16, 24),
                         **hdf5plugin.Bitshuffle(cname="lz4"))
        f["/entry"].attrs["NX_class"] = "NXentry"
    with make("gzip_earliest.h5", libver="earliest") as f:
        f.create_dataset("/exchange/data", data=data, chunks=(1, 16, 24), compression="gzip",
                         shuffle=True)
        f.create_dataset("/exchange/data_white", data=data[:2], chunks=(1, 16, 24))
    with make("contiguous_latest.h5", libver="latest") as f:
        f.create_dataset("/data", data=data)
        f.create_group("/meta").attrs["note"] = "x" * 50
        f["/link"] = h5py.SoftLink("/data")
        f["/ext"] = h5py.ExternalLink("other.h5", "/data")
    with make("tiled_blosc.h5") as f:
        f.create_dataset("/d", data=data.astype("float32"), chunks=(2, 8, 8),
                         **hdf5plugin.Blosc(cname="lz4"))
    with make("compact_groups.h5", libver="latest") as f:
        for i in range(12):
            f.create_group(f"/g{i}").create_dataset("v", data=np.arange(i + 1))
        f.create_dataset("/stack", data=data[:3], chunks=(1, 16, 24), compression="lzf")
    return made


def _mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One seeded corruption: bit flips (header/metadata/anywhere/chunk area), overwritten
    address fields, zeroed blocks, inserted bytes or truncation."""
    n = len(data)
    buf = bytearray(data)
    how = rng.choice(["flip-superblock", "flip-metadata", "flip-any", "flip-tail", "ff-address",
                      "zero-block", "insert", "truncate", "truncate-tail"])
    if how.startswith("flip"):
        lo, hi = {"flip-superblock": (0, min(n, 96)), "flip-metadata": (0, min(n, 4096)),
                  "flip-any": (0, n), "flip-tail": (int(n * 0.7), n)}[how]
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(lo, max(lo + 1, hi))
            buf[pos] ^= 1 << rng.randrange(8)
    elif how == "ff-address":
        pos = rng.randrange(0, max(1, min(n, 4096) - 8))
        buf[pos:pos + 8] = rng.choice([b"\xff" * 8, b"\x00" * 8, b"\x7f" + b"\xff" * 7])
    elif how == "zero-block":
        pos = rng.randrange(0, n)
        buf[pos:pos + rng.randint(16, 512)] = bytes(min(n - pos, 512))[: len(buf[pos:pos + 512])]
    elif how == "insert":
        pos = rng.randrange(0, n)
        buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif how == "truncate":
        del buf[rng.randrange(0, n):]
    else:
        del buf[n - rng.randint(1, max(1, n // 4)):]
    return how, bytes(buf)


@pytest.fixture(scope="module")
def mutants(tmp_path_factory) -> list[dict]:
    from conftest import TESTDATA as testdata

    assert testdata.is_dir(), f"{testdata} is missing"
    folder = tmp_path_factory.mktemp("hostile")
    seeds = [testdata / name for name in SHARED_SEEDS] + _tiny_seeds(
        tmp_path_factory.mktemp("hostile-seeds"))
    rng = random.Random(SEED)
    out = []
    for seed in seeds:
        data = seed.read_bytes()
        for k in range(MUTANTS_PER_SEED):
            how, mutated = _mutate(data, rng)
            path = folder / f"{seed.stem}-{k:02d}-{how}.h5"
            path.write_bytes(mutated)
            out.append({"path": str(path), "seed": seed.name, "how": how})
    return out


# -- the worker pool -----------------------------------------------------------------------------


class Worker:
    """A subprocess probing one input at a time; restarted when it dies or hangs."""

    def __init__(self, env: dict, timeout: float = PER_INPUT_TIMEOUT):
        self.env = env
        self.timeout = timeout
        self.proc = None
        self.restarts = 0

    def _start(self):
        self.stderr = open(os.devnull, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.stderr, text=True, bufsize=1, env=self.env)

    def probe(self, target: str) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        self.proc.stdin.write(json.dumps(target) + "\n")
        self.proc.stdin.flush()
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            ready = sel.select(self.timeout)
        if not ready:
            self.close()
            self.restarts += 1
            return {"fatal": f"hang: no answer in {self.timeout} s"}
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait(10)
            self.proc = None
            self.restarts += 1
            return {"fatal": f"worker died (exit {code})"}
        return json.loads(line)

    def close(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


def run_all(targets: list[str], env: dict, workers: int = 2) -> list[dict]:
    pool = [Worker(env) for _ in range(workers)]
    shares = [targets[i::workers] for i in range(workers)]
    try:
        with ThreadPoolExecutor(workers) as ex:
            parts = list(ex.map(lambda w, share: [w.probe(t) for t in share], pool, shares))
    finally:
        for w in pool:
            w.close()
    results: list[dict] = [{}] * len(targets)
    for i, part in enumerate(parts):
        results[i::workers] = part
    return results


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {**env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}


def _problems(inputs: list[dict], results: list[dict]) -> list[str]:
    problems = []
    for item, outcome in zip(inputs, results, strict=True):
        for step, text in outcome.items():
            if step == "fatal" or not (text == "ok" or text.startswith("echo ")):
                problems.append(f"{Path(item['path']).name} [{item['how']}] {step}: {text}")
    return problems


# -- tests ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_hundreds_of_corrupted_files_give_only_our_errors(mutants):
    assert len(mutants) >= 300
    results = run_all([m["path"] for m in mutants], _env())
    problems = _problems(mutants, results)
    assert problems == [], "\n".join(problems)
    # The corruptions were hostile enough: most inputs fail somewhere, with our messages.
    failed = sum(1 for r in results if any(v != "ok" for v in r.values()))
    assert failed > len(mutants) // 3, failed
    kinds = {v.split(":")[0] for r in results for v in r.values() if v != "ok"}
    assert {"echo NotHDF5File", "echo TruncatedFile"} <= kinds, kinds


@pytest.mark.slow
def test_corrupted_files_over_s3_give_only_our_errors(mutants, s3, bucket, moto_server):
    rng = random.Random(SEED + 1)
    chosen = rng.sample(mutants, 16)
    targets = []
    for item in chosen:
        key = f"hostile/{Path(item['path']).name}"
        s3.client.upload_file(item["path"], bucket, key)
        targets.append(f"s3://{bucket}/{key}")
    results = run_all(targets, _env(FUZZ_ENDPOINT=moto_server.endpoint, FUZZ_ACCESS=ACCESS_KEY,
                                    FUZZ_SECRET=SECRET_KEY))
    problems = _problems(chosen, results)
    assert problems == [], "\n".join(problems)
    for outcome in results:
        for text in outcome.values():
            assert SECRET_KEY not in text and ACCESS_KEY not in text
    # What opens locally opens over S3 and vice versa (the same bytes, another reader).
    local = run_all([c["path"] for c in chosen], _env())
    assert [{k: v == "ok" for k, v in r.items()} for r in results] == \
        [{k: v == "ok" for k, v in r.items()} for r in local]


def test_saved_reproducers_give_only_our_errors():
    inputs = [{"path": str(p), "how": "saved"} for p in sorted(CRASHERS.glob("*.h5"))]
    assert len(inputs) >= 5
    results = run_all([i["path"] for i in inputs], _env())
    assert _problems(inputs, results) == []
    assert all(r["describe"].startswith("echo ") for r in results), results


def test_damaged_compressed_chunk_is_not_called_a_missing_filter(tmp_path):
    """Garbage inside an LZ4 chunk: the message says the data is damaged, not the install."""
    path = tmp_path / "lz4_damaged.h5"
    with h5py.File(path, "w") as f:
        frames = np.arange(4 * 16 * 24, dtype="uint16").reshape(4, 16, 24)
        d = f.create_dataset("/data", data=frames, chunks=(1, 16, 24), **hdf5plugin.LZ4())
        info = d.id.get_chunk_info(0)  # frame 0: always read by the probe
    raw = bytearray(path.read_bytes())
    # hdf5plugin's LZ4 chunk: 8-byte total size, 4-byte block size, then per block a 4-byte
    # compressed size; an impossible block size makes the decoder fail.
    start = info.byte_offset + 12
    raw[start:start + 4] = b"\xff\xff\xff\x7f"
    path.write_bytes(bytes(raw))
    worker = Worker(_env())
    try:
        outcome = worker.probe(str(path))
    finally:
        worker.close()
    assert outcome["describe"] == "ok"
    assert outcome["frames"].startswith("echo HDF5Error: "), outcome
    assert "damaged" in outcome["frames"] and "LZ4" in outcome["frames"], outcome


@pytest.mark.slow
def test_the_worker_pool_detects_a_crash_and_a_hang(tmp_path):
    """The harness itself: a worker that segfaults or hangs is reported, then replaced."""
    good = str(_tiny_seeds(tmp_path)[0])
    worker = Worker(_env(), timeout=5.0)
    try:
        assert worker.probe(good) == {"describe": "ok", "children": "ok", "frames": "ok"}
        assert worker.probe("!segfault") == {"fatal": "worker died (exit -11)"}
        assert worker.probe(good)["frames"] == "ok"  # a fresh worker
        assert worker.probe("!hang") == {"fatal": "hang: no answer in 5.0 s"}
        assert worker.probe(good)["describe"] == "ok"
        assert worker.restarts == 2
    finally:
        worker.close()
