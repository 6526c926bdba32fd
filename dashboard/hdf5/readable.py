"""Whether a dataset can be read as a stack from here, and what a failed read means: the checks
:class:`~dashboard.hdf5.stack.FrameStack` makes when it opens a dataset, as plain functions.

Every function takes the open :class:`~dashboard.hdf5.source.Source` (or the dataset) and the
file's URL, and raises or returns one of :mod:`.errors`' exceptions with a sentence for the user.
"""

from __future__ import annotations

from pathlib import Path

import h5py

from .decode import DECODERS, pipeline
from .errors import FilterUnavailable, HDF5Error, LinkUnreachable, NotAnImageStack
from .source import h5py_error
from .tree import FILTER_NAMES, filters_of


def _external_exists(url: str, filename: str) -> bool:
    base = Path(url).parent
    return (base / filename).exists() or Path(filename).exists()


def resolve_dataset(source, path: str) -> h5py.Dataset:
    """The dataset at ``path``, following soft links; external links only to local files that
    exist (never from S3). Call inside ``source.h5()``."""
    f, url = source.file, source.url
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
