"""The metadata side of an open file: :class:`RangeFile`, a read-only file object with a small
block cache over ranged GETs (what h5py reads an object through), and :class:`IOStats`, the
requests and bytes that crossed the network."""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from .errors import HDF5Error

#: Bytes fetched by the first metadata read (superblock, root group, usually the object headers).
FIRST_BLOCK = 256 * 1024
#: Block size of the metadata cache after the first block.
BLOCK_SIZE = 64 * 1024
#: Reads of this many bytes or more skip the block cache and fetch exactly what is asked.
DIRECT_READ = 4 * BLOCK_SIZE
#: Upper bound of the metadata block cache per open file.
MAX_CACHED_BLOCKS = 512


class OverBudget(HDF5Error):
    """A metadata read beyond :meth:`Source.metadata_budget` (a huge attribute, say)."""


@dataclass
class IOStats:
    """Requests and bytes that crossed the network (or the disk) for one open file.

    ``requests``/``bytes`` count everything; ``metadata_*`` is the part h5py asked for
    (superblock, object headers, chunk indexes) and ``data_*`` the exact chunk reads.
    """

    metadata_requests: int = 0
    metadata_bytes: int = 0
    data_requests: int = 0
    data_bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, nbytes: int, *, metadata: bool) -> None:
        with self._lock:
            if metadata:
                self.metadata_requests += 1
                self.metadata_bytes += nbytes
            else:
                self.data_requests += 1
                self.data_bytes += nbytes

    @property
    def requests(self) -> int:
        return self.metadata_requests + self.data_requests

    @property
    def bytes(self) -> int:
        return self.metadata_bytes + self.data_bytes

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "get_requests": self.metadata_requests + self.data_requests,
                "bytes_fetched": self.metadata_bytes + self.data_bytes,
                "metadata_requests": self.metadata_requests,
                "metadata_bytes": self.metadata_bytes,
                "data_requests": self.data_requests,
                "data_bytes": self.data_bytes,
            }


class RangeFile(io.RawIOBase):
    """A read-only, seekable file object over ``fetch(start, length)`` with a small block cache.

    Given to ``h5py.File`` for metadata. The first read fetches :data:`FIRST_BLOCK` bytes (the
    superblock and usually every object header), later ones :data:`BLOCK_SIZE` blocks, missing
    neighbours merged into one request; reads of :data:`DIRECT_READ` bytes or more (h5py's own
    data path) fetch exactly the bytes asked for. Thread-safe.
    """

    def __init__(self, fetch, size: int, *, name: str = "", first: bytes | None = None):
        super().__init__()
        self._fetch = fetch
        self._size = size
        self._pos = 0
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        if first:
            self._store_first(first)
        self._lock = threading.RLock()
        self.name = name
        self.error: BaseException | None = None  # the last fetch failure (h5py hides it)
        self.reads = 0  # read calls by HDF5 (cache hits included): how much metadata it touched
        self.max_read: int | None = None  # larger reads fail (Source.metadata_budget)
        self.budget_left: int | None = None  # bytes still allowed in all (metadata_budget)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self._pos = offset
        elif whence == io.SEEK_CUR:
            self._pos += offset
        elif whence == io.SEEK_END:
            self._pos = self._size + offset
        else:
            raise ValueError(f"bad whence {whence}")
        return self._pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self.pread(self._pos, len(view))
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def pread(self, start: int, length: int) -> bytes:
        """Bytes ``[start, start + length)`` clipped to the file size."""
        length = max(0, min(length, self._size - start))
        self.reads += 1
        if length == 0:
            return b""
        if length >= DIRECT_READ:
            return self._get(start, length)
        with self._lock:
            if not self._blocks and start < FIRST_BLOCK:
                self._store_first(self._get(0, min(FIRST_BLOCK, self._size)))
            first_block, last_block = start // BLOCK_SIZE, (start + length - 1) // BLOCK_SIZE
            missing = [b for b in range(first_block, last_block + 1) if b not in self._blocks]
            if missing:
                lo, hi = missing[0], missing[-1]
                begin = lo * BLOCK_SIZE
                data = self._get(begin, min((hi + 1) * BLOCK_SIZE, self._size) - begin)
                for b in range(lo, hi + 1):
                    chunk = data[(b - lo) * BLOCK_SIZE : (b - lo + 1) * BLOCK_SIZE]
                    self._blocks.setdefault(b, chunk)
            parts = []
            for b in range(first_block, last_block + 1):
                self._blocks.move_to_end(b)
                parts.append(self._blocks[b])
            while len(self._blocks) > MAX_CACHED_BLOCKS:
                self._blocks.popitem(last=False)
        joined = b"".join(parts)
        offset = start - first_block * BLOCK_SIZE
        return joined[offset : offset + length]

    def _store_first(self, first: bytes) -> None:
        """Keep the first :data:`FIRST_BLOCK` bytes (whole blocks only, the tail may be short)."""
        for b in range(0, len(first), BLOCK_SIZE):
            block = first[b : b + BLOCK_SIZE]
            if len(block) == BLOCK_SIZE or b + len(block) == self._size:
                self._blocks[b // BLOCK_SIZE] = block

    def _get(self, start: int, length: int) -> bytes:
        if self.max_read is not None and length > self.max_read:
            self.error = OverBudget(f"{self.name}: a larger piece of metadata than this viewer "
                                    "reads")
            raise self.error
        if self.budget_left is not None:
            if length > self.budget_left:
                self.error = OverBudget(f"{self.name}: more bytes than this read may take")
                raise self.error
            self.budget_left -= length
        try:
            return self._fetch(start, length)
        except BaseException as exc:
            self.error = exc
            raise
