"""The one seam between the state layer and the data: list, describe, open.

h5web's ``DataProviderApi`` is the model. A session holds one :class:`Provider` once it is
connected; the state models reach S3 and HDF5 only through it:

* :func:`connect` resolves the endpoint and the keys once
  (:func:`~dashboard.config.resolve_endpoint`: an endpoint given on the command line, in the
  environment or in the page, else the key file's ``"endpoint"``, else ECHO; on a shared
  server only one of the operator's endpoints) and checks them by listing the buckets;
* :meth:`Provider.open` reads a file's tree and opens its stack from **one**
  :class:`~dashboard.hdf5.source.Source` (one first-block GET per load); :meth:`Provider.inspect`
  describes a selected file and keeps its Source for the Load that usually follows, so
  selecting and then loading a file still costs one;
* :meth:`Provider.reopen` gives a long job (batch, preview, ROI series, thumbnail) a handle of
  its own from the stack's :class:`~dashboard.hdf5.stack.StackSpec`: the job closes it, and
  nothing it uses is closed by anyone else (opening another file in the viewer included) —
  until the session ends: :meth:`Provider.shutdown` closes every handle it gave out (their
  reads stop between chunks) and the S3 connections;
* every stack it opens keeps to the session's budgets (:attr:`Provider.max_frame_pixels`,
  :data:`~dashboard.hdf5.readable.MAX_CHUNKS_PER_FRAME` chunks per frame), and at most
  :attr:`Provider.max_jobs` job handles are open at once.

:class:`MemoryProvider` serves HDF5 files held in memory through the same code paths, so the
state tests run without an S3 server.
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone

from ..config import DEFAULT_MAX_FRAME_PIXELS, allowed_endpoint
from ..errors import EchoError
from ..hdf5.describe import describe
from ..hdf5.readable import MAX_CHUNKS_PER_FRAME
from ..hdf5.source import Source, open_bytes, open_source
from ..hdf5.stack import FrameStack, StackSpec, open_stack
from ..storage.credentials import Credentials
from ..storage.s3 import S3, Listing, ObjectInfo, parse_s3_url

log = logging.getLogger(__name__)


@dataclass
class Opened:
    """What :meth:`Provider.open` found: the file's tree and its stack (or why there is none).

    ``stack`` owns the Source the tree was read from; close it when done. ``error`` is set
    (and ``stack`` is ``None``) when the file has a tree but the stack could not be opened.
    """

    url: str
    tree: dict | None
    stack: FrameStack | None
    error: Exception | None = None


class Provider:
    """Data access for one session: subclasses say how to reach objects (:meth:`_source`)."""

    #: Where the data lives (shown to the user, compared with a link's endpoint).
    endpoint: str = ""
    #: The S3 connection for ``s3://`` outputs and downloads (``None`` in memory).
    s3: S3 | None = None
    #: The pixel budget of every stack opened here (the session sets its ``Settings``').
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS
    #: Frames split into more chunks than this are refused (each chunk is a lookup and a GET).
    max_frame_chunks: int | None = MAX_CHUNKS_PER_FRAME
    #: Job handles (:meth:`stack`, :meth:`reopen`) open at once, at most: a session's worker
    #: threads are never all busy with long jobs.
    max_jobs: int = 3

    def __init__(self):
        self._kept: tuple[str, Source, dict] | None = None  # the last inspected file
        self._kept_lock = threading.Lock()  # per provider: nothing shared between sessions
        self._closed = False  # a describe finishing after close() keeps nothing
        self._shut = False  # the session ended: nothing more is opened
        self._stacks: weakref.WeakSet[FrameStack] = weakref.WeakSet()  # every handle given out
        self._jobs: weakref.WeakSet[FrameStack] = weakref.WeakSet()

    # -- listing -----------------------------------------------------------------------------

    def buckets(self) -> list[str]:
        raise NotImplementedError

    def list_objects(self, bucket: str, *, limit: int, prefix: str = "") -> Listing:
        raise NotImplementedError

    # -- files -------------------------------------------------------------------------------

    def _source(self, url: str) -> Source:
        raise NotImplementedError

    def _open_source(self, url: str) -> Source:
        if self._shut:
            raise EchoError("This session has ended.")
        return self._source(url)

    def _stack(self, source: Source, dataset: str | None, *, prefetch: bool,
               job: bool) -> FrameStack:
        """Open ``dataset`` of ``source`` within the budgets, and remember the handle."""
        with self._kept_lock:
            busy = job and sum(not s._closed for s in self._jobs) >= self.max_jobs
        if busy:
            source.close()
            raise EchoError(f"{self.max_jobs} long jobs (batch, preview, ROI series, last "
                            "frame, locked contrast) are running in this session: wait for one "
                            "to finish or cancel it.")
        stack = open_stack(source, dataset, prefetch=prefetch,
                           max_frame_pixels=self.max_frame_pixels,
                           max_frame_chunks=self.max_frame_chunks)  # takes the Source over
        with self._kept_lock:
            self._stacks.add(stack)
            if job:
                self._jobs.add(stack)
            shut = self._shut
        if shut:  # the session ended while it opened
            stack.close()
            raise EchoError("This session has ended.")
        return stack

    def inspect(self, url: str) -> dict:
        """The tree of ``url``; its Source stays open for a following :meth:`open` of ``url``
        (which takes it over), until another file is inspected or the provider is closed."""
        source = self._open_source(url)
        try:
            description = describe(source)
        except BaseException:
            source.close()
            raise
        self._keep((url, source, description))
        return description

    def _keep(self, kept) -> None:
        with self._kept_lock:
            if self._closed:
                old = kept  # closed meanwhile (session closed, reconnected): keep nothing
            else:
                old, self._kept = self._kept, kept
        if old is not None:
            old[1].close()

    def discard(self, url: str) -> None:
        """Close the Source kept for ``url`` (the Load it was kept for opened its own)."""
        source, _tree = self._take(url)
        if source is not None:
            source.close()

    def _take(self, url: str) -> tuple[Source | None, dict | None]:
        with self._kept_lock:
            kept = self._kept
            if kept is None or kept[0] != url:
                return None, None
            self._kept = None
        return kept[1], kept[2]

    def value(self, url: str, path: str, *, source=None):
        """The :class:`~dashboard.hdf5.values.Value` of ``path`` in ``url``: read through
        ``source`` (the open stack's), else the Source kept by :meth:`inspect`, else a Source of
        its own, closed afterwards."""
        from ..hdf5.values import read_value

        if source is not None:
            return read_value(source, path)
        with self._kept_lock:
            kept = self._kept if self._kept is not None and self._kept[0] == url else None
        if kept is not None:
            return read_value(kept[1], path)
        with self._open_source(url) as own:
            return read_value(own, path)

    def describe(self, url: str) -> dict:
        """The tree of ``url`` (``info --json``'s document); the file is closed afterwards."""
        with self._open_source(url) as source:
            return describe(source)

    def open(self, url: str, dataset: str | None = None, *, tree: bool = True,
             prefetch: bool = True) -> Opened:
        """Read the tree (if ``tree``) and open ``dataset`` (default: the default stack) from
        one Source. Raises when the file cannot be opened at all; a file whose tree was read
        but whose stack cannot be opened comes back with ``stack=None`` and ``error``."""
        source, description = self._take(url)
        if source is None:
            source = self._open_source(url)
            try:
                description = describe(source) if tree else None
            except BaseException:
                source.close()
                raise
        try:
            stack = self._stack(source, dataset, prefetch=prefetch, job=False)
        except Exception as exc:  # noqa: BLE001 - the tree is still worth showing
            if description is None:
                raise
            return Opened(url, description, None, exc)
        return Opened(url, description, stack)

    def stack(self, url: str, dataset: str | None = None, *,
              prefetch: bool = False) -> FrameStack:
        """A handle of the caller's own on ``url``'s stack (default: the default stack); it
        never takes over the Source :meth:`inspect` keeps for the Load."""
        return self._stack(self._open_source(url), dataset, prefetch=prefetch, job=True)

    def reopen(self, spec: StackSpec, *, prefetch: bool = False) -> FrameStack:
        """A new handle on the stack of ``spec``, owned by the caller (a job closes its own).

        Refused when ``spec`` was opened through another endpoint (the session reconnected
        since): the same bucket and key there may be another object, read with other keys.
        """
        if spec.endpoint and self.endpoint and spec.endpoint != self.endpoint:
            raise EchoError(f"{spec.url} was opened from {spec.endpoint}, and the session is "
                            f"now connected to {self.endpoint}: load the file again.")
        return self.stack(spec.url, spec.dataset, prefetch=prefetch)

    def close(self) -> None:
        """Close the Source kept by :meth:`inspect` (open stacks are closed by their owners)."""
        with self._kept_lock:
            self._closed = True
            old, self._kept = self._kept, None
        if old is not None:
            old[1].close()

    def stop(self) -> None:
        """The session ended: open nothing more, and make every handle given out stop reading
        (at once, never waiting: safe on the event loop). :meth:`shutdown` then releases them."""
        with self._kept_lock:
            self._shut = self._closed = True
            stacks = list(self._stacks)
        for stack in stacks:
            stack.stop()

    def shutdown(self) -> None:
        """:meth:`stop`, then close every handle given out and the S3 connection's sockets
        (waits for reads in flight to end: call it off the event loop)."""
        self.stop()
        self.close()
        with self._kept_lock:
            stacks = list(self._stacks)
        for stack in stacks:
            try:
                stack.close()
            except Exception:  # closing what is left, whatever state it is in
                log.debug("closing a stack at shutdown failed", exc_info=True)
        if self.s3 is not None:
            self.s3.close()


class S3Provider(Provider):
    """Objects on an S3 endpoint, read through one :class:`~dashboard.storage.s3.S3`."""

    def __init__(self, s3: S3):
        super().__init__()
        self.s3 = s3
        self.endpoint = s3.endpoint

    @property
    def credentials(self) -> Credentials:
        return self.s3.credentials

    def buckets(self) -> list[str]:
        return self.s3.list_buckets()

    def list_objects(self, bucket: str, *, limit: int, prefix: str = "") -> Listing:
        return self.s3.list_objects(bucket, prefix, limit=limit)

    def _source(self, url: str) -> Source:
        return open_source(url, s3=self.s3)

    def __repr__(self) -> str:
        return f"S3Provider({self.s3!r})"


def connect(credentials: Credentials, *, endpoint: str | None = None,
            allowed: tuple[str, ...] | list[str] | None = None,
            ) -> tuple[S3Provider, list[str]]:
    """Resolve the endpoint (:func:`~dashboard.config.resolve_endpoint`: ``endpoint`` if given,
    else the keys' own, else ECHO) and check the keys by listing the buckets.

    With ``allowed`` (the operator's endpoints on a shared server), an endpoint outside it,
    asked for by the session or by the keys, is refused before any request is sent
    (:func:`~dashboard.config.allowed_endpoint`)."""
    provider = S3Provider(S3(allowed_endpoint(endpoint, credentials, allowed), credentials))
    return provider, provider.buckets()


class MemoryProvider(Provider):
    """HDF5 files held in memory, ``{bucket: {key: bytes}}``: the state tests' data, no server.

    Files are read through the same :class:`~dashboard.hdf5.source.RangeFile` and decoders as
    S3 objects; :attr:`opened` counts the Sources opened per URL (one per load, one per job).
    """

    endpoint = "memory://"

    def __init__(self, objects: dict[str, dict[str, bytes]]):
        super().__init__()
        self.objects = {bucket: dict(keys) for bucket, keys in objects.items()}
        self.opened: dict[str, int] = {}
        self._time = datetime.now(timezone.utc)

    def buckets(self) -> list[str]:
        return sorted(self.objects)

    def list_objects(self, bucket: str, *, limit: int, prefix: str = "") -> Listing:
        keys = sorted(k for k in self.objects.get(bucket, {}) if k.startswith(prefix))
        infos = [ObjectInfo(key, len(self.objects[bucket][key]), self._time, "") for key in keys]
        return Listing(objects=infos[:limit], truncated=len(infos) > limit, limit=limit)

    def _source(self, url: str) -> Source:
        bucket, key = parse_s3_url(url)
        try:
            data = self.objects[bucket][key]
        except KeyError:
            raise EchoError(f"Not found: {url}") from None
        self.opened[url] = self.opened.get(url, 0) + 1
        return open_bytes(url, data)

    def __repr__(self) -> str:
        return f"MemoryProvider({sorted(self.objects)})"
