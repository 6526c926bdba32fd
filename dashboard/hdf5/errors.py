"""Errors of the HDF5 layer: one sentence each, meant for the scientist.

S3 failures (403, 404, timeouts after retries) keep the storage layer's types
(:class:`~dashboard.storage.s3.AccessDenied`, :class:`~dashboard.storage.s3.NotFound`,
:class:`~dashboard.storage.s3.EndpointUnreachable`), produced by ``S3.translate``.
"""

from __future__ import annotations

from ..errors import EchoError


class HDF5Error(EchoError):
    """Something about an HDF5 file prevents showing it."""


class NotHDF5File(HDF5Error):
    """The object is not an HDF5 file (no HDF5 signature at 0, 512, 1024, ...)."""


class TruncatedFile(HDF5Error):
    """The file is shorter than its own header says (an interrupted upload or copy)."""


class FilterUnavailable(HDF5Error):
    """A dataset is compressed with a filter this installation cannot decode."""

    def __init__(self, message: str, *, filter_id: int | None = None, name: str | None = None):
        super().__init__(message)
        self.filter_id = filter_id
        self.name = name


class LinkUnreachable(HDF5Error):
    """An external link or a virtual dataset's source file cannot be reached."""


class NotAnImageStack(HDF5Error):
    """The dataset (or the file) holds no numeric array of at least two dimensions."""


class ObjectChanged(HDF5Error):
    """The object was replaced on the server while it was open (its ETag changed)."""


class OutsideObject(HDF5Error):
    """A dataset of an object keeps its pixels in files outside the object (external raw
    storage): they would be looked up on the server's file system, so they are never read."""


class TooLarge(HDF5Error):
    """A frame (or its chunks) is beyond what this process reads at once (the pixel budget).

    ``what`` names it ("frame 40000×20000"), ``limit`` is the budget it is over (pixels).
    """

    def __init__(self, message: str, *, what: str = "", limit: int | None = None):
        super().__init__(message)
        self.what = what
        self.limit = limit
