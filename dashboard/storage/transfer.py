"""What a download reports: progress while it runs, one result per object, the whole report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .listing import human_size

DOWNLOADED = "downloaded"
SKIPPED = "skipped"
FAILED = "failed"
CANCELLED = "cancelled"


@dataclass(frozen=True)
class DownloadProgress:
    """A snapshot of a running download, given to the ``progress`` callback.

    Attributes
    ----------
    key : str
        The object whose bytes moved last ("" for the final summary snapshot).
    file_bytes, file_total : int
        Bytes of ``key`` written so far, and its size.
    bytes_done, bytes_total : int
        Bytes of the whole batch processed so far (written, skipped as already present, or
        given up on because the file failed), and the sum of all sizes.
    files_done, files_total : int
        Files finished (downloaded, skipped or failed), and the number of keys in the batch.
    """

    key: str
    file_bytes: int
    file_total: int
    bytes_done: int
    bytes_total: int
    files_done: int
    files_total: int

    @property
    def fraction(self) -> float:
        """Overall progress in [0, 1] (by bytes, or by files when there are no bytes)."""
        if self.bytes_total:
            return min(1.0, self.bytes_done / self.bytes_total)
        return self.files_done / self.files_total if self.files_total else 1.0


@dataclass(frozen=True)
class FileResult:
    """What happened to one key: ``status`` is downloaded, skipped, failed or cancelled."""

    key: str
    status: str
    path: Path | None = None
    size: int = 0
    message: str = ""


@dataclass(frozen=True)
class DownloadReport:
    """Per-file results of :func:`download_objects`, in the order the keys were given."""

    out_dir: Path
    results: tuple[FileResult, ...]
    cancelled: bool = False
    seconds: float = 0.0

    def _with(self, status: str) -> list[FileResult]:
        return [r for r in self.results if r.status == status]

    @property
    def downloaded(self) -> list[FileResult]:
        return self._with(DOWNLOADED)

    @property
    def skipped(self) -> list[FileResult]:
        return self._with(SKIPPED)

    @property
    def failed(self) -> list[FileResult]:
        return self._with(FAILED)

    @property
    def cancelled_files(self) -> list[FileResult]:
        """Files left undone because the batch was cancelled."""
        return self._with(CANCELLED)

    @property
    def ok(self) -> bool:
        """True when every file is downloaded or skipped."""
        return all(r.status in (DOWNLOADED, SKIPPED) for r in self.results)

    @property
    def bytes_downloaded(self) -> int:
        return sum(r.size for r in self.downloaded)

    def summary(self) -> str:
        """One line, e.g. ``"3 downloaded, 1 skipped, 1 failed (4.2 MB in 1.3 s)."``."""
        counts = [
            f"{len(self._with(status))} {status}"
            for status in (DOWNLOADED, SKIPPED, FAILED, CANCELLED)
            if self._with(status) or status == DOWNLOADED
        ]
        return (
            f"{', '.join(counts)} ({human_size(self.bytes_downloaded)} in {self.seconds:.1f} s)."
        )
