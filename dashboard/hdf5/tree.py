"""A lazy tree of an HDF5 file: plain :class:`Node` records of groups, datasets and links.

Nothing here walks a whole file eagerly: :func:`children` lists one group on demand and
:func:`walk` goes breadth-first and stops after ``limit`` nodes, after :data:`WALK_SECONDS` or
after :data:`GROUP_MEMBER_LIMIT` members of one group. External links are shown, never followed
(nor soft links that lead through one). Attributes larger than :data:`ATTR_READ_BYTES` are named
with their size, not read. Where the image stacks are is :mod:`.stacks`; the ``info`` document
is :mod:`.describe`.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import h5py
import numpy as np

from .errors import HDF5Error, NotAnImageStack
from .metadata import (  # noqa: F401 (attr_value: re-exported)
    GROUP_MEMBER_LIMIT,
    WALK_SECONDS,
    attr_value,
    attrs_of,
    member_names,
    metadata_budget,
)

#: Nodes that :func:`describe` lists before it stops (breadth-first) and says so.
DEFAULT_NODE_LIMIT = 500
#: Objects a stack search visits at most when no well-known path holds a stack.
SEARCH_LIMIT = 2000
#: Chunked datasets with more chunks than this do not report their stored size over S3
#: (asking HDF5 for it reads the whole chunk index).
STORED_SIZE_MAX_CHUNKS = 256

FILTER_NAMES = {
    1: "gzip",
    2: "shuffle",
    3: "fletcher32",
    4: "szip",
    5: "nbit",
    6: "scaleoffset",
    307: "bzip2",
    32000: "LZF",
    32001: "Blosc",
    32004: "LZ4",
    32008: "Bitshuffle",
    32013: "ZFP",
    32015: "Zstd",
    32017: "SZ",
    32018: "FCIDECOMP",
    32024: "SZ3",
    32026: "Blosc2",
}


@dataclass
class Node:
    """One entry of the tree: a group, a dataset or a link that is not followed."""

    path: str
    kind: str  # "group" | "dataset" | "soft_link" | "external_link" | "dangling_link"
    shape: tuple | None = None
    dtype: str | None = None
    chunks: tuple | None = None
    filters: list = field(default_factory=list)
    attrs: dict = field(default_factory=dict)
    target: str | None = None
    virtual: bool = False
    stored_bytes: int | None = None
    logical_bytes: int | None = None
    n_children: int | None = None

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1] or "/"

    @property
    def is_stack_candidate(self) -> bool:
        return self.kind == "dataset" and is_stack_shape_dtype(self.shape, self.dtype)

    def to_json(self) -> dict:
        out = {
            "path": self.path,
            "kind": self.kind,
            "shape": list(self.shape) if self.shape is not None else None,
            "dtype": self.dtype,
            "chunks": list(self.chunks) if self.chunks is not None else None,
            "filters": self.filters,
            "attrs": self.attrs,
        }
        if self.target is not None:
            out["target"] = self.target
        if self.kind == "dataset":
            out["virtual"] = self.virtual
            out["stored_bytes"] = self.stored_bytes
            out["logical_bytes"] = self.logical_bytes
        return out


# -- helpers ---------------------------------------------------------------------------


def _file(obj) -> h5py.File:
    """An ``h5py.File`` from a File, a :class:`~dashboard.hdf5.source.Source` or a stack."""
    if isinstance(obj, h5py.File):
        return obj
    for attr in ("file", "source"):
        inner = getattr(obj, attr, None)
        if inner is not None and inner is not obj:
            return _file(inner)
    raise TypeError(f"expected an h5py.File or a Source, got {type(obj).__name__}")


def _lock(obj):
    """``source.h5()`` for a Source or FrameStack, nothing for a bare ``h5py.File``."""
    import contextlib

    source = getattr(obj, "source", obj)
    h5 = getattr(source, "h5", None)
    return h5() if callable(h5) else contextlib.nullcontext()


def frame_count(shape) -> int:
    """Frames of a stack: 1 for 2-D, the product of all leading axes for ndim >= 3."""
    return math.prod(shape[:-2]) if len(shape) >= 2 else 0


def is_numeric_dtype(dtype) -> bool:
    dtype = np.dtype(dtype)
    return dtype.kind in "biuf" and dtype.fields is None and dtype.subdtype is None


def is_stack_shape_dtype(shape, dtype) -> bool:
    if shape is None or dtype is None or len(shape) < 2:
        return False
    try:
        return is_numeric_dtype(dtype) and all(n > 0 for n in shape)
    except TypeError:
        return False


def check_stack(dset: h5py.Dataset, url: str = "") -> None:
    """Raise :class:`NotAnImageStack` unless ``dset`` is a numeric array with ndim >= 2."""
    where = f" in {url}" if url else ""
    if not isinstance(dset, h5py.Dataset):
        raise NotAnImageStack(f"{getattr(dset, 'name', dset)}{where} is a group, not an image stack.")
    shape, dtype = dset.shape, dset.dtype
    if shape is None or len(shape) == 0:
        raise NotAnImageStack(f"{dset.name}{where} is a single value, not an image stack.")
    if dtype.fields is not None:
        raise NotAnImageStack(f"{dset.name}{where} is a table (compound type), not an image stack.")
    if not is_numeric_dtype(dtype):
        raise NotAnImageStack(f"{dset.name}{where} holds {_dtype_text(dtype)}, not image pixels.")
    if len(shape) < 2:
        raise NotAnImageStack(f"{dset.name}{where} is 1-D {shape}, not an image stack.")
    if any(n == 0 for n in shape):
        raise NotAnImageStack(f"{dset.name}{where} is empty (shape {shape}).")


def _dtype_text(dtype: np.dtype) -> str:
    if h5py.check_string_dtype(dtype) is not None or dtype.kind in "SUO":
        return "text"
    if dtype.kind == "b":
        return "booleans"
    return f"values of type {dtype}"


def filters_of(dset: h5py.Dataset) -> list[dict]:
    """The dataset's filter pipeline, in write order: ``[{"id": 32008, "name": "Bitshuffle"}]``."""
    plist = dset.id.get_create_plist()
    out = []
    for k in range(plist.get_nfilters()):
        fid, _flags, _cd, raw_name = plist.get_filter(k)
        name = FILTER_NAMES.get(fid)
        if name is None:
            name = raw_name.decode("ascii", "replace").strip("\0 ") if raw_name else f"filter {fid}"
        out.append({"id": int(fid), "name": name})
    return out


def through_external(f: h5py.File, path: str, *, hops: int = 8) -> str | None:
    """The first external link that resolving ``path`` would cross (soft links followed by
    path, never by HDF5), or ``None``; links that lead nowhere count as not crossing one."""
    parts = [p for p in path.split("/") if p]
    current = ""
    for k, part in enumerate(parts):
        parent = current or "/"
        try:
            group = f[parent]
            link = group.get(part, getlink=True) if isinstance(group, h5py.Group) else None
        except Exception:
            return None
        current = _join(parent, part)
        if isinstance(link, h5py.ExternalLink):
            return current
        if isinstance(link, h5py.SoftLink):
            if hops <= 0:
                return current  # a loop of soft links: treat as unreachable
            target = link.path if link.path.startswith("/") else _join(parent, link.path)
            rest = "/".join(parts[k + 1:])
            return through_external(f, f"{target}/{rest}" if rest else target, hops=hops - 1)
    return None


def _dataset_node(path: str, dset: h5py.Dataset, *, cheap_sizes: bool) -> Node:
    dtype = dset.dtype
    node = Node(
        path=path,
        kind="dataset",
        shape=tuple(int(n) for n in dset.shape) if dset.shape is not None else None,
        dtype=str(dtype) if dtype.fields is None else "compound",
        chunks=tuple(dset.chunks) if dset.chunks else None,
        filters=filters_of(dset),
        attrs=attrs_of(dset),
        virtual=bool(dset.is_virtual),
    )
    if node.shape is not None:
        node.logical_bytes = int(math.prod(node.shape) * dtype.itemsize)
    if not node.virtual:
        n_chunks = (
            math.prod(math.ceil(s / c) for s, c in zip(node.shape, node.chunks))
            if node.chunks and node.shape else 0
        )
        if cheap_sizes or n_chunks <= STORED_SIZE_MAX_CHUNKS:
            node.stored_bytes = int(dset.id.get_storage_size())
    return node


def _join(parent: str, name: str) -> str:
    return f"/{name}" if parent in ("", "/") else f"{parent}/{name}"


def _child_node(group: h5py.Group, path: str, name: str, *, cheap_sizes: bool) -> Node:
    link = group.get(name, getlink=True)
    if isinstance(link, h5py.ExternalLink):
        return Node(path=path, kind="external_link", target=f"{link.filename}:{link.path}")
    if isinstance(link, h5py.SoftLink):
        crossed = None
        try:
            crossed = through_external(group.file, path)
            target_obj = group.get(name) if crossed is None else None
        except Exception:
            target_obj = None
        if crossed is not None:
            return Node(path=path, kind="soft_link", target=link.path)
        kind = "soft_link" if target_obj is not None else "dangling_link"
        return Node(path=path, kind=kind, target=link.path)
    try:
        obj = group[name]
    except Exception as exc:  # unreadable object header, unknown object type
        return Node(path=path, kind="unreadable", target=f"{type(exc).__name__}")
    if isinstance(obj, h5py.Dataset):
        return _dataset_node(path, obj, cheap_sizes=cheap_sizes)
    if isinstance(obj, h5py.Group):  # its members are not counted: that reads its index
        return Node(path=path, kind="group", attrs=attrs_of(obj))
    return Node(path=path, kind="datatype")


def _group(f: h5py.File, path: str) -> h5py.Group:
    group = f[path] if path not in ("", "/") else f
    if not isinstance(group, h5py.Group):
        raise HDF5Error(f"{path} is a dataset, not a group.")
    return group


def child_names(source, path: str = "/", *, limit: int = GROUP_MEMBER_LIMIT) -> list[str]:
    """Names of a group's members (at most ``limit``): reads only the group's own index, no
    member's header."""
    with _lock(source):
        return member_names(_group(_file(source), path), limit)[0]


def children(source, path: str = "/", *, offset: int = 0, limit: int | None = None,
             cheap_sizes: bool | None = None) -> list[Node]:
    """The direct members of one group, in the file's order (links are not followed).

    Parameters
    ----------
    source : Source, FrameStack or h5py.File
    path : str
        Path of a group.
    offset, limit : int
        A page of the members (``limit=None``: all, up to :data:`GROUP_MEMBER_LIMIT`); only the
        page's object headers are read, so a group of thousands of members can be shown page
        by page.
    """
    from .source import H5PY_ERRORS

    f = _file(source)
    if cheap_sizes is None:
        cheap_sizes = not getattr(source, "is_s3", False)
    try:
        names = child_names(source, path, limit=GROUP_MEMBER_LIMIT if limit is None
                            else min(GROUP_MEMBER_LIMIT, offset + limit))
        page = names[offset:] if limit is None else names[offset : offset + limit]
        with _lock(source):
            group = _group(f, path)
            nodes = []
            for name in page:
                with metadata_budget(source):
                    nodes.append(_child_node(group, _join(path, name), name,
                                             cheap_sizes=cheap_sizes))
            return nodes
    except H5PY_ERRORS as exc:
        raise _translate(source, exc) from None


def _translate(source, exc: BaseException):
    """Our error for an h5py failure while inspecting ``source`` (Source, FrameStack or File)."""
    from .source import h5py_error

    inner = getattr(source, "source", source)  # a FrameStack's Source
    if hasattr(inner, "translate"):
        return inner.translate(exc, "inspect")
    return h5py_error(exc, str(getattr(_file(source), "filename", "")), "inspect")


def walk(source, *, limit: int = DEFAULT_NODE_LIMIT, cheap_sizes: bool | None = None,
         seconds: float | None = None, stopped: list | None = None) -> Iterator[Node]:
    """Nodes breadth-first from the root (root first), at most ``limit`` of them.

    Hard-linked groups seen before are not entered again, so cycles end. The walk also stops
    after ``seconds`` (default :data:`WALK_SECONDS`; ``math.inf``: never) and lists at most :data:`GROUP_MEMBER_LIMIT` members per group; each
    node's metadata is read within :data:`ATTR_READ_BYTES` (larger attributes are named, not
    read). When it stops for time or a group's size, a sentence saying so is appended to
    ``stopped``.
    """
    f = _file(source)
    if cheap_sizes is None:
        cheap_sizes = not getattr(source, "is_s3", False)
    seconds = WALK_SECONDS if seconds is None else seconds
    deadline = time.monotonic() + seconds
    emitted = 0
    with _lock(source), metadata_budget(source):
        root = Node(path="/", kind="group", attrs=attrs_of(f), n_children=len(f))
        seen = {h5py.h5o.get_info(f.id).addr}
    yield root
    emitted += 1
    queue = deque(["/"])
    while queue and emitted < limit:
        parent = queue.popleft()
        with _lock(source):
            group = f[parent] if parent != "/" else f
            names, more = member_names(group, GROUP_MEMBER_LIMIT)
        if more and stopped is not None:
            stopped.append(f"{parent} has more than {GROUP_MEMBER_LIMIT} members: only the "
                           f"first {GROUP_MEMBER_LIMIT} are listed.")
        for name in names:
            if emitted >= limit:
                return
            if time.monotonic() > deadline:
                if stopped is not None:
                    stopped.append(f"Listing stopped after {seconds:g} s: the file has more "
                                   "entries than can be read in that time.")
                return
            path = _join(parent, name)
            with _lock(source), metadata_budget(source):
                node = _child_node(group, path, name, cheap_sizes=cheap_sizes)
                if node.kind == "group":
                    addr = h5py.h5o.get_info(group[name].id).addr
                    if addr not in seen:
                        seen.add(addr)
                        queue.append(path)
            emitted += 1
            yield node
