"""Open an image stack (:func:`open_stack`) from S3 or a local file, within the pixel budget;
:class:`StackSpec` reopens it elsewhere (a job's own handle, a Dask worker). The stack itself,
the one reader of frames, is :class:`~dashboard.hdf5.frames.FrameStack`.

Examples
--------
>>> from dashboard import open_stack                      # doctest: +SKIP
>>> with open_stack("s3://bucket/scan.h5") as stack:      # doctest: +SKIP
...     image = stack.frame(4000)
...     flat = stack.mean(range(10))
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import frame_budget
from ..storage.credentials import Credentials
from .errors import NotAnImageStack
from .frames import FRAME_CACHE, READ_AHEAD, FrameStack  # noqa: F401 (re-exported)
from .prefetch import PREFETCH_RADIUS, PREFETCH_WORKERS  # noqa: F401 (re-exported)
from .source import H5PY_ERRORS, Source, open_source
from .stacks import default_stack


@dataclass(frozen=True)
class StackSpec:
    """Everything needed to reopen a stack elsewhere (a Dask worker): small and picklable."""

    url: str
    dataset: str
    endpoint: str | None = None
    credentials: Credentials | str | None = None
    max_frame_pixels: int | None = None
    max_frame_chunks: int | None = None

    def open(self, **kwargs) -> FrameStack:
        """A new :class:`~dashboard.hdf5.stack.FrameStack` of this dataset, within the same
        budgets."""
        kwargs.setdefault("max_frame_pixels", self.max_frame_pixels)
        kwargs.setdefault("max_frame_chunks", self.max_frame_chunks)
        return open_stack(self.url, self.dataset, endpoint=self.endpoint,
                          credentials=self.credentials, **kwargs)

    def __repr__(self) -> str:
        return f"StackSpec(url={self.url!r}, dataset={self.dataset!r}, endpoint={self.endpoint!r})"


def open_stack(url_or_path, dataset: str | None = None, *, endpoint: str | None = None,
               credentials=None, s3=None, prefetch: bool = True,
               cache=None, max_frame_pixels: int | None = None,
               max_frame_chunks: int | None = None) -> FrameStack:
    """Open an image stack in ``s3://bucket/key`` or a local HDF5 file.

    Parameters
    ----------
    url_or_path : str, path or Source
        ``s3://BUCKET/KEY``, a local path, or an open :class:`~.source.Source` (the stack takes
        it over and closes it; the file's tree can be read from the same Source first, so a
        load costs one first-block GET).
    dataset : str, optional
        Path of the dataset; default: :func:`~dashboard.hdf5.stacks.default_stack`.
    endpoint : str, optional
        S3 endpoint (default: the credentials' endpoint, else ECHO).
    credentials : Credentials or path, optional
        A :class:`Credentials` object or a JSON key file; unset means the usual lookup.
    s3 : S3, optional
        An existing connection (takes precedence over endpoint/credentials).
    prefetch : bool
        Prefetch neighbours i±1, i±2 in the background after each :meth:`FrameStack.frame`.
    max_frame_pixels : int, optional
        The pixel budget: a larger frame (or chunk) is refused before anything is read
        (default: ``ECHO_S3_MAX_FRAME_PIXELS``, else :data:`~dashboard.config.DEFAULT_MAX_FRAME_PIXELS`).
    max_frame_chunks : int, optional
        Refuse datasets whose frames are split into more chunks than this (default: no limit).

    Raises
    ------
    NotHDF5File, TruncatedFile, FilterUnavailable, LinkUnreachable, NotAnImageStack
    OutsideObject, TooLarge
    dashboard.storage.s3.AccessDenied, NotFound, EndpointUnreachable
    """
    source = (url_or_path if isinstance(url_or_path, Source) else
              open_source(url_or_path, s3=s3, endpoint=endpoint, credentials=credentials))
    try:
        if dataset is None:
            try:
                dataset = default_stack(source)
            except H5PY_ERRORS as exc:
                raise source.translate(exc, "inspect") from None
            if dataset is None:
                raise NotAnImageStack(
                    f"{source.url} contains no image stack (no numeric dataset with 2 or more "
                    "dimensions)."
                )
        if max_frame_pixels is None:
            max_frame_pixels = frame_budget()
        spec = StackSpec(
            url=source.url, dataset=dataset,
            endpoint=source.s3.endpoint if source.s3 is not None else None,
            credentials=source.s3.credentials if source.s3 is not None else None,
            max_frame_pixels=max_frame_pixels, max_frame_chunks=max_frame_chunks,
        )
        return FrameStack(source, dataset, spec=spec, prefetch=prefetch, cache=cache)
    except BaseException:
        source.close()
        raise
