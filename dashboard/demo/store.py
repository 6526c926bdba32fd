"""The embedded demo store: synthetic X-ray data in a local S3 server (moto), no keys needed.

Three steps, each usable on its own:

1. :func:`build_cache` generates every demo object once into a local cache directory
   (``platformdirs.user_cache_dir("echo-s3-viewer")/demo-<version>/<scale>/``, or
   ``$ECHO_S3_DEMO_CACHE/demo-<version>/<scale>/``). Every file is written to a temporary name
   and renamed into place only when complete, and a ``manifest.json`` written last marks the
   cache as complete: a crash mid-build never leaves a corrupt file under a final name, and the
   next build only generates what is missing.
2. :func:`populate` uploads the cached files into a bucket (:data:`DEMO_BUCKET`) and creates an
   empty second bucket (:data:`EMPTY_BUCKET`), with a thread pool.
3. :func:`start_demo_store` starts :class:`~dashboard.demo.server.MotoS3Server` on 127.0.0.1,
   makes its ranged GETs cheap (:mod:`dashboard.demo.fastrange`) and populates it.

Tests share one populated store per process through :func:`ensure_populated`.

Examples
--------
>>> with start_demo_store(scale="small") as demo:             # doctest: +SKIP
...     demo.s3.list_objects(DEMO_BUCKET).objects[:3]
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ..storage.credentials import Credentials
from ..storage.s3 import S3
from .files import (
    MIN_FRAMES,
    small_objects,
    write_dxchange,
    write_image2d,
    write_nexus,
    write_not_hdf5,
    write_short,
)
from .synthetic import GENERATOR_VERSION

log = logging.getLogger(__name__)

DEMO_BUCKET = "echo-demo"
EMPTY_BUCKET = "echo-demo-empty"

#: Fixed, fake keys for the demo store. They are not secret: moto accepts any keys.
DEMO_CREDENTIALS = Credentials(
    access_key="ECHODEMOACCESSKEY0001",
    secret_key="echo-demo-secret-key-not-a-secret",
    source="demo store",
)

NEXUS_KEY = "beamline/2026-11/scan_0001.nxs"
DXCHANGE_KEY = "beamline/2026-11/tomo_0002_dxchange.h5"
SHORT_KEY = "beamline/2026-11/alignment_0003_short.h5"
IMAGE2D_KEY = "calibration/2026-11/detector_flat_2d.h5"
NOT_HDF5_KEY = "beamline/2026-11/scan_0004_notes.h5"
README_KEY = "README.txt"  # uploaded last: its presence (and ETag) marks a complete upload

#: Dataset paths inside the demo files.
NEXUS_DATASET = "/entry/data/data"
DXCHANGE_DATASET = "/exchange/data"
SHORT_DATASET = "/entry/data/data"
IMAGE2D_DATASET = "/image"


#: Bump when the set of objects or their layout changes (the pixels are versioned by the
#: generator). Both are part of the cache directory's name.
LAYOUT_VERSION = "2"
CACHE_ENV = "ECHO_S3_DEMO_CACHE"
MANIFEST = "manifest.json"
SCALES = ("full", "small")


@dataclass(frozen=True)
class DemoShapes:
    """Array shapes of the main demo objects at one scale (``SHAPES["full"]``, ``["small"]``)."""

    nexus: tuple[int, int, int]
    dxchange: tuple[int, int, int]
    flats: int  # white and dark frames in the Data Exchange file
    short: tuple[int, int, int]
    image2d: tuple[int, int]


SHAPES = {
    "full": DemoShapes((200, 1024, 1024), (60, 512, 512), 10, (12, 512, 512), (1024, 1024)),
    "small": DemoShapes((40, 256, 256), (24, 128, 128), 5, (12, 128, 128), (256, 256)),
}


@dataclass
class BuildReport:
    """What :func:`build_cache` did: the directory, and which objects it generated or reused."""

    directory: Path
    keys: list[str]
    generated: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)

    def path(self, key: str) -> Path:
        """The cached local file of ``key``."""
        return object_path(self.directory, key)


# -- cache --------------------------------------------------------------------------------


def cache_root() -> Path:
    """``$ECHO_S3_DEMO_CACHE`` or the user cache dir, plus ``demo-<version>``."""
    base = os.environ.get(CACHE_ENV)
    if not base:
        from platformdirs import user_cache_dir

        base = user_cache_dir("echo-s3-viewer")
    return Path(base) / f"demo-{GENERATOR_VERSION}.{LAYOUT_VERSION}"


def cache_dir(scale: str = "full") -> Path:
    """The cache directory of one scale."""
    _check_scale(scale)
    return cache_root() / scale


def object_path(directory: Path, key: str) -> Path:
    return directory / "objects" / key


def _check_scale(scale: str) -> None:
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, not {scale!r}")


@contextmanager
def _atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` only on success."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def _remove_stale_temporaries(directory: Path) -> None:
    """Delete temporary files left by builds whose process has died."""
    if not directory.is_dir():
        return
    for tmp in directory.rglob(".*.tmp-*"):
        try:
            pid = int(tmp.name.rsplit(".tmp-", 1)[1].split("-", 1)[0])
        except (IndexError, ValueError):
            continue
        if pid == os.getpid() or _pid_alive(pid):
            continue
        tmp.unlink(missing_ok=True)
        log.debug("Removed stale temporary file %s", tmp)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def build_cache(scale: str = "full", *, directory: Path | None = None) -> BuildReport:
    """Generate the demo objects of ``scale`` into the cache, reusing complete files.

    Parameters
    ----------
    scale : {"full", "small"}
        ``"full"``: a 200 × 1024 × 1024 NeXus stack and friends (about 300 MB);
        ``"small"``: the same objects with small frames, for tests.
    directory : Path, optional
        Where to build; defaults to :func:`cache_dir`.

    Returns
    -------
    BuildReport
    """
    _check_scale(scale)
    directory = Path(directory) if directory is not None else cache_dir(scale)
    recipes = _recipes(scale)
    manifest_path = directory / MANIFEST
    report = BuildReport(directory=directory, keys=list(recipes))
    manifest = _read_manifest(manifest_path)
    if manifest is not None and _manifest_matches(directory, manifest, recipes):
        report.reused = list(recipes)
        return report

    _remove_stale_temporaries(directory)
    started = time.perf_counter()
    announced = False
    for key, recipe in recipes.items():
        path = object_path(directory, key)
        if path.is_file():
            report.reused.append(key)
            continue
        if not announced:
            log.info("Generating demo data (first start only)… in %s", directory)
            announced = True
        with _atomic_path(path) as tmp:
            recipe(tmp)
        report.generated.append(key)
    entries = {
        key: {"size": object_path(directory, key).stat().st_size} for key in recipes
    }
    with _atomic_path(manifest_path) as tmp:
        tmp.write_text(json.dumps({
            "version": f"{GENERATOR_VERSION}.{LAYOUT_VERSION}",
            "scale": scale,
            "objects": entries,
        }, indent=1))
    if report.generated:
        log.info("Demo data ready: %d objects generated in %.1f s",
                 len(report.generated), time.perf_counter() - started)
    return report


def _read_manifest(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _manifest_matches(directory: Path, manifest: dict, recipes: dict) -> bool:
    objects = manifest.get("objects", {})
    if set(objects) != set(recipes):
        return False
    for key, entry in objects.items():
        try:
            if object_path(directory, key).stat().st_size != entry["size"]:
                return False
        except (OSError, KeyError, TypeError):
            return False
    return True


# -- the objects ----------------------------------------------------------------------------


def _recipes(scale: str) -> dict[str, Callable[[Path], None]]:
    """Every demo key and the function that writes its file, in a fixed order."""
    shapes = SHAPES[scale]
    recipes: dict[str, Callable[[Path], None]] = {
        NEXUS_KEY: lambda p: write_nexus(p, shapes.nexus, seed=1,
                                         file_name=Path(NEXUS_KEY).name),
        DXCHANGE_KEY: lambda p: write_dxchange(p, shapes.dxchange, shapes.flats, seed=2),
        SHORT_KEY: lambda p: write_short(p, shapes.short, seed=3),
        IMAGE2D_KEY: lambda p: write_image2d(p, shapes.image2d, seed=4),
        NOT_HDF5_KEY: write_not_hdf5,
    }
    recipes.update(small_objects())
    recipes[README_KEY] = lambda p: p.write_bytes(_readme(shapes).encode())  # see populate()
    return recipes


def _readme(shapes: DemoShapes) -> str:
    n, h, w = shapes.nexus
    d = shapes.dxchange
    return f"""ECHO S3 Viewer demo bucket (synthetic data, generated locally)

{NEXUS_KEY}  {n} x {h} x {w} uint16 NeXus stack, Bitshuffle-LZ4, one frame per chunk
{DXCHANGE_KEY}  {d[0]} x {d[1]} x {d[2]} Data Exchange (gzip): data, data_white, data_dark
{SHORT_KEY}  {shapes.short[0]} frames: fewer than {MIN_FRAMES}, processing refuses it
{NOT_HDF5_KEY}  not HDF5 at all (text with an .h5 name)
{IMAGE2D_KEY}  a single {shapes.image2d[0]} x {shapes.image2d[1]} image

Everything else: small files so that listing, filtering and sorting have something to do.
Generator version {GENERATOR_VERSION}, layout version {LAYOUT_VERSION}.
"""


# -- upload ----------------------------------------------------------------------------------


def populate(
    s3: S3,
    *,
    scale: str = "full",
    bucket: str = DEMO_BUCKET,
    empty_bucket: str | None = EMPTY_BUCKET,
    max_workers: int = 16,
) -> BuildReport:
    """Build (or reuse) the cached demo objects and upload them into ``bucket``.

    Parameters
    ----------
    s3 : S3
        A connection to the (demo) S3 server.
    scale : {"full", "small"}
    bucket : str
        Bucket to create (if missing) and fill; the default is :data:`DEMO_BUCKET`. Tests that
        need a fresh copy pass a unique name (moto's state is global per process).
    empty_bucket : str or None
        A second bucket created empty; ``None`` to skip.
    max_workers : int
        Concurrent uploads.

    Returns
    -------
    BuildReport
        The cache it uploaded from (``report.path(key)`` is the local copy of each object).
    """
    report = build_cache(scale)
    started = time.perf_counter()
    for name in (bucket, empty_bucket):
        if name:
            _create_bucket(s3, name)
    keys = [key for key in report.keys if key != README_KEY]
    with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="demo-upload") as pool:
        # Large objects first so that they do not finish last on their own.
        order = sorted(keys, key=lambda k: -report.path(k).stat().st_size)
        etags = dict(zip(order, pool.map(
            lambda key: _upload(s3, bucket, key, report.path(key)), order)))
    etags[README_KEY] = _upload(s3, bucket, README_KEY, report.path(README_KEY))  # the marker
    dated = _backdate_in_process(bucket, etags)
    log.info("Uploaded %d demo objects to s3://%s in %.1f s%s", len(etags), bucket,
             time.perf_counter() - started, " (dates set)" if dated else "")
    return report


def demo_date(key: str) -> datetime:
    """A plausible, deterministic "last modified" time for a demo key.

    Keys under a ``YYYY-MM`` directory fall in that month, ``archive/YYYY/qN/week_WW`` in that
    ISO week, the main demo files on the day of the scan, the rest over the previous months.
    """
    h = int(hashlib.md5(key.encode(), usedforsecurity=False).hexdigest()[:8], 16)
    seconds = timedelta(seconds=h % 86_400)
    if key in (NEXUS_KEY, DXCHANGE_KEY, SHORT_KEY, IMAGE2D_KEY, NOT_HDF5_KEY, README_KEY):
        order = (README_KEY, NEXUS_KEY, DXCHANGE_KEY, SHORT_KEY, NOT_HDF5_KEY, IMAGE2D_KEY)
        return datetime(2026, 11, 17, 14, 3, tzinfo=timezone.utc) + timedelta(
            minutes=7 * order.index(key))
    month = re.search(r"(?:^|/)(\d{4})-(\d{2})/", key)
    if month:
        day = datetime(int(month[1]), int(month[2]), 1 + h % 28, tzinfo=timezone.utc)
        return day + seconds
    week = re.search(r"(?:^|/)(\d{4})/q\d/week_(\d{2})/", key)
    if week:
        day = datetime.fromisocalendar(int(week[1]), int(week[2]), 1 + h % 5)
        return day.replace(tzinfo=timezone.utc) + seconds
    return datetime(2026, 6, 1, tzinfo=timezone.utc) + timedelta(days=h % 160) + seconds


def _backdate_in_process(bucket: str, etags: dict[str, str]) -> bool:
    """Give the uploaded objects their :func:`demo_date` if the S3 server is moto in this process.

    S3 has no API to set ``LastModified``; without this every object would carry the upload
    second and sorting by date would show nothing. Only objects whose ETag is the one just
    uploaded are touched, and nothing happens when the server lives in another process.
    """
    try:
        from moto.s3.models import s3_backends
    except ImportError:  # pragma: no cover - moto is a dependency
        return False
    owner = s3_backends.bucket_accounts.get(bucket)
    if owner is None:
        return False
    partition, account = owner
    fake_bucket = s3_backends[account][partition].buckets.get(bucket)
    if fake_bucket is None:
        return False
    dated = False
    for key, etag in etags.items():
        fake = fake_bucket.keys.get(key)
        if fake is not None and fake.etag == etag:
            fake.last_modified = demo_date(key).replace(tzinfo=None)  # moto keeps naive UTC
            dated = True
    return dated


def _create_bucket(s3: S3, name: str) -> None:
    client = s3.client
    try:
        client.create_bucket(Bucket=name)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass


def _upload(s3: S3, bucket: str, key: str, path: Path) -> str:
    """PUT one file; returns the ETag (quoted, as S3 sends it)."""
    with open(path, "rb") as fh:
        return s3.client.put_object(Bucket=bucket, Key=key, Body=fh)["ETag"]


_ensure_lock = threading.Lock()


def ensure_populated(s3: S3, scale: str = "small") -> BuildReport:
    """Populate :data:`DEMO_BUCKET` on ``s3``'s server unless it is already (idempotent).

    For tests: every module calls it with the session's ``s3`` fixture and gets the same
    bucket, filled once per server. The check is the ETag (MD5) of :data:`README_KEY`, which
    :func:`populate` uploads last and whose text names the scale, so a half-finished upload is
    redone and a bucket holding the other scale raises ``RuntimeError``.
    """
    _check_scale(scale)
    readme = _readme(SHAPES[scale]).encode()
    expected = hashlib.md5(readme, usedforsecurity=False).hexdigest()
    with _ensure_lock:
        try:
            etag = s3.client.head_object(Bucket=DEMO_BUCKET, Key=README_KEY)["ETag"].strip('"')
        except s3.client.exceptions.ClientError:
            etag = None
        if etag == expected:
            return build_cache(scale)  # reuses the cache: the local copies for the caller
        if etag is not None:
            raise RuntimeError(
                f"s3://{DEMO_BUCKET} already holds other demo data than the {scale!r} scale")
        return populate(s3, scale=scale)


# -- the store --------------------------------------------------------------------------------


class DemoStore:
    """A running demo S3 server with the demo buckets filled.

    Attributes
    ----------
    endpoint : str
        ``http://127.0.0.1:<port>``.
    credentials : Credentials
        :data:`DEMO_CREDENTIALS`.
    s3 : S3
        A connection to the server with those credentials.
    buckets : tuple of str
        ``(DEMO_BUCKET, EMPTY_BUCKET)``.
    report : BuildReport
        The local cache the objects came from.
    """

    def __init__(self, server, report: BuildReport):
        self._server = server
        self.endpoint: str = server.endpoint
        self.credentials = DEMO_CREDENTIALS
        self.s3 = S3(self.endpoint, DEMO_CREDENTIALS)
        self.buckets = (DEMO_BUCKET, EMPTY_BUCKET)
        self.report = report

    def __repr__(self) -> str:
        return f"DemoStore(endpoint={self.endpoint!r})"

    def stop(self) -> None:
        """Stop the server (the cache stays on disk)."""
        self._server.stop()

    def __enter__(self) -> DemoStore:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_demo_store(*, scale: str = "full", host: str = "127.0.0.1",
                     port: int | None = None) -> DemoStore:
    """Start the embedded S3 server on ``host`` and fill the demo buckets.

    The first start generates the data (a few seconds for ``"full"``); later starts reuse the
    cache and only upload. Stop it with :meth:`DemoStore.stop` or use it as a context manager.
    """
    from .fastrange import install as install_fast_ranges
    from .server import MotoS3Server

    _check_scale(scale)
    install_fast_ranges()  # frame-by-frame browsing: read only the bytes of each ranged GET
    report = build_cache(scale)  # before the server: nothing listens while we generate
    server = MotoS3Server(host=host, port=port).start()
    try:
        populate(S3(server.endpoint, DEMO_CREDENTIALS), scale=scale)
        store = DemoStore(server, report)
    except BaseException:
        server.stop()
        raise
    log.info("Demo S3 store ready at %s (bucket %s)", store.endpoint, DEMO_BUCKET)
    return store
