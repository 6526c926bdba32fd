"""Whether a dataset can be read as a stack from here, and what a failed read means: the checks
:class:`~dashboard.hdf5.stack.FrameStack` makes when it opens a dataset, as plain functions.

Every function takes the open :class:`~dashboard.hdf5.source.Source` (or the dataset) and the
file's URL, and raises or returns one of :mod:`.errors`' exceptions with a sentence for the user.
"""

from __future__ import annotations

import math
from pathlib import Path

import h5py

from .decode import DECODERS, pipeline
from .errors import (
    FilterUnavailable,
    HDF5Error,
    LinkUnreachable,
    NotAnImageStack,
    OutsideObject,
    TooLarge,
)
from .source import h5py_error
from .tree import FILTER_NAMES, filters_of, through_external

#: Chunks one frame may be split into, at most, on a server (``max_frame_chunks``): each is an
#: index lookup and a request, so a frame of thousands kept "View Last Frame" busy for minutes.
MAX_CHUNKS_PER_FRAME = 1024


def _external_exists(url: str, filename: str) -> bool:
    base = Path(url).parent
    return (base / filename).exists() or Path(filename).exists()


def resolve_dataset(source, path: str) -> h5py.Dataset:
    """The dataset at ``path``, following soft links; external links only to local files that
    exist (never from an object store, not even behind a soft link). Call inside
    ``source.h5()``."""
    f, url = source.file, source.url
    crossed = through_external(f, path) if source.is_s3 else None
    if crossed is not None:  # an object's external links are never followed (soft links too)
        parent, name = crossed.rsplit("/", 1)
        link = f[parent or "/"].get(name, getlink=True)
        target = getattr(link, "filename", "another file")
        if crossed == "/" + "/".join(p for p in path.split("/") if p):
            raise LinkUnreachable(f"{crossed} in {url} is an external link to {target}, "
                                  "which cannot be reached from here.")
        raise LinkUnreachable(f"{path} in {url} leads through {crossed}, an external link to "
                              f"{target}, which cannot be reached from here.")
    parts = [p for p in path.split("/") if p]
    current = ""
    for part in parts:
        parent = current or "/"
        current = f"{current}/{part}"
        link = f[parent].get(part, getlink=True) if isinstance(f[parent], h5py.Group) else None
        if link is None:
            raise NotAnImageStack(f"There is no dataset {path} in {url}.")
        if isinstance(link, h5py.ExternalLink):
            if source.is_s3 or not _external_exists(url, link.filename):
                raise LinkUnreachable(
                    f"{current} in {url} is an external link to {link.filename}, "
                    "which cannot be reached from here."
                )
    obj = f.get(path)
    if obj is None:
        raise LinkUnreachable(f"{path} in {url} is a link whose target does not exist.")
    if not isinstance(obj, h5py.Dataset):
        raise NotAnImageStack(f"{path} in {url} is a group, not an image stack.")
    return obj


def check_virtual(source, dset: h5py.Dataset) -> None:
    """Refuse a virtual dataset whose source files cannot be reached from here."""
    if not dset.is_virtual:
        return
    for vs in dset.virtual_sources():
        if vs.file_name == ".":
            continue
        if source.is_s3 or not _external_exists(source.url, vs.file_name):
            raise LinkUnreachable(
                f"{dset.name} in {source.url} is a virtual dataset whose source file "
                f"{vs.file_name} cannot be reached from here."
            )


def check_contained(source, dset: h5py.Dataset) -> None:
    """Refuse, in an object from the store, a dataset whose pixels live in other files: HDF5
    would look for them on this machine's file system (``/proc/self/environ``, another user's
    files). Local files keep their external storage (the user's own machine)."""
    if source.is_s3 and dset.id.get_create_plist().get_external_count() > 0:
        raise OutsideObject(f"{dset.name} in {source.url} keeps its pixels in external files "
                            "outside the object, which are never read from here.")
    check_virtual(source, dset)


def check_budget(dset: h5py.Dataset, *, max_pixels: int, max_chunks: int | None = None) -> None:
    """Refuse a dataset whose frame (or chunk) is over ``max_pixels``, or whose frame is split
    into more than ``max_chunks`` chunks, before anything is read or allocated."""
    height, width = (int(n) for n in dset.shape[-2:])
    if height * width > max_pixels:
        what = f"frame {width}×{height}"
        raise TooLarge(f"{what} is larger than this server displays; use the CLI on a machine "
                       "with enough memory.", what=what, limit=max_pixels)
    chunks = dset.chunks
    if not chunks:
        return
    if math.prod(chunks) > max_pixels:
        what = f"{dset.name}'s chunk of {'×'.join(str(n) for n in chunks)} values"
        raise TooLarge(f"{what} is larger than this server reads at once; use the CLI on a "
                       "machine with enough memory.", what=what, limit=max_pixels)
    per_frame = math.ceil(height / chunks[-2]) * math.ceil(width / chunks[-1])
    if max_chunks is not None and per_frame > max_chunks:
        raise TooLarge(f"{dset.name} splits each frame into {per_frame} chunks (more than "
                       f"{max_chunks}), too many to read here; use the CLI, or store whole "
                       "frames per chunk.")


def filter_message(dset: h5py.Dataset, url: str, filter_id: int,
                   verb: str = "is not available") -> str:
    names = {f["id"]: f["name"] for f in filters_of(dset)}
    name = names.get(filter_id) or FILTER_NAMES.get(filter_id, "unknown")
    return (f"{dset.name} in {url} is compressed with the {name} filter "
            f"(id {filter_id}), which {verb} in this installation.")


def check_filters(dset: h5py.Dataset, url: str) -> None:
    """Refuse a dataset compressed with a filter neither our decoders nor HDF5 have."""
    for f in pipeline(dset):
        if f.id in DECODERS or h5py.h5z.filter_avail(f.id):
            continue
        raise FilterUnavailable(filter_message(dset, url, f.id), filter_id=f.id,
                                name=FILTER_NAMES.get(f.id))


def read_error(source, dset: h5py.Dataset, exc: OSError) -> Exception:
    """Our exception for an h5py read of ``dset`` that failed with ``exc``."""
    rangefile = getattr(source, "_rangefile", None)
    if rangefile is not None and rangefile.error is not None:
        return source.translate(exc)
    text = str(exc).lower()
    if "filter" in text or "plugin" in text:
        missing = [f.id for f in pipeline(dset)
                   if f.id not in DECODERS and not h5py.h5z.filter_avail(f.id)]
        if missing:
            fid = missing[0]
            return FilterUnavailable(filter_message(dset, source.url, fid,
                                                    "cannot decode its data"),
                                     filter_id=fid, name=FILTER_NAMES.get(fid))
        # Every filter is installed (open checked it): the stored bytes are damaged.
        names = ", ".join(f["name"] for f in filters_of(dset)) or "its filters"
        return HDF5Error(f"{dset.name} in {source.url} has damaged compressed data: "
                         f"{names} could not decode it.")
    return h5py_error(exc, source.url, "read")
