"""Where a file's image stacks are, and which one to show first (:func:`default_stack`).

:func:`default_stack` tries the well-known places (NeXus default plottable signal,
``/entry/data/data``, ``/exchange/data``) before a bounded walk, then ranks the candidates by
their NeXus group (NXdata, NXdetector, the rest, NXmonitor), frame size and frame count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import h5py
import numpy as np

from .metadata import metadata_budget, small_attr
from .tree import (
    SEARCH_LIMIT,
    Node,
    _file,
    _join,
    _lock,
    frame_count,
    is_stack_shape_dtype,
    through_external,
    walk,
)


@dataclass(frozen=True)
class Candidate:
    """A dataset that can be shown as a stack of frames (``group_class``: its group's
    NeXus ``NX_class``, ``""`` when it has none)."""

    path: str
    shape: tuple
    dtype: str
    group_class: str = ""

    @property
    def n_frames(self) -> int:
        return frame_count(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

def _candidate(f: h5py.File, path: str) -> Candidate | None:
    try:
        link = f.get(path, getlink=True)
        if link is None or through_external(f, path) is not None:
            return None
        obj = f.get(path)
    except (KeyError, OSError, ValueError, RuntimeError):
        return None
    if not isinstance(obj, h5py.Dataset):
        return None
    shape, dtype = obj.shape, obj.dtype
    if not is_stack_shape_dtype(shape, dtype):
        return None
    return Candidate(path=obj.name, shape=tuple(int(n) for n in shape), dtype=str(dtype))


def _text(value) -> str | None:
    if isinstance(value, bytes | np.bytes_):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.size == 1:
        return _text(value.ravel()[0])
    return value if isinstance(value, str) else None


def _member(group: str, name: str) -> str:
    return name if name.startswith("/") else _join(group, name)


def nexus_default(f: h5py.File) -> str | None:
    """Path of the NeXus default plottable signal (``default`` -> NXdata ``signal``), if any."""
    group = f
    for _level in range(3):  # root -> NXentry -> NXdata (NXentry may point at NXsubentry)
        cls = _text(small_attr(group, "NX_class"))
        signal = _text(small_attr(group, "signal"))
        if signal and (cls == "NXdata" or cls is None):
            path = _member(group.name, signal)
            return path if through_external(f, path) is None and path in f else None
        default = _text(small_attr(group, "default"))
        if not default or through_external(f, _member(group.name, default)) is not None:
            return None
        child = group.get(default)
        if not isinstance(child, h5py.Group):
            return None
        group = child
    return None


KNOWN_STACKS = ("/entry/data/data", "/exchange/data")


def candidates_of(nodes) -> list[Candidate]:
    """The stack candidates among :func:`walk`'s nodes (or ``describe``'s JSON nodes), each
    with the ``NX_class`` of its group (groups come before their members breadth-first)."""
    classes: dict[str, str] = {}
    out = []
    for node in nodes:
        if isinstance(node, dict):
            node = Node(path=node["path"], kind=node["kind"],
                        shape=tuple(node["shape"]) if node.get("shape") else None,
                        dtype=node.get("dtype"), attrs=node.get("attrs") or {})
        if node.kind == "group":
            classes[node.path] = _text(node.attrs.get("NX_class")) or ""
        elif node.is_stack_candidate:
            parent = node.path.rsplit("/", 1)[0] or "/"
            out.append(Candidate(path=node.path, shape=tuple(node.shape), dtype=node.dtype,
                                 group_class=classes.get(parent, "")))
    return out


def stack_candidates(source, *, limit: int = SEARCH_LIMIT) -> list[Candidate]:
    """Numeric datasets with ndim >= 2 found within ``limit`` nodes breadth-first."""
    return candidates_of(walk(source, limit=limit, cheap_sizes=False))


#: How a dataset's NeXus group ranks when choosing the default stack (lower first).
CLASS_RANK = {"NXdata": 0, "NXdetector": 1, "": 2, "NXmonitor": 3}


def _rank(candidate: Candidate) -> tuple:
    height, width = candidate.shape[-2:]
    return (CLASS_RANK.get(candidate.group_class, 2), -(height * width), -candidate.n_frames,
            len(candidate.path), candidate.path)


def choose_default(candidates: list[Candidate]) -> str | None:
    """The default among stacks with ndim >= 3 (else among 2-D datasets; ``None`` if neither).

    Datasets in an ``NXdata`` group first, then ``NXdetector``, then the rest, ``NXmonitor``
    last; among those the largest frame (height × width), then the most frames, then the
    shortest path.
    """
    stacks = [c for c in candidates if len(c.shape) >= 3]
    pool = stacks or [c for c in candidates if len(c.shape) == 2]
    if not pool:
        return None
    return min(pool, key=_rank).path


def default_stack(source, *, candidates: list[Candidate] | None = None) -> str | None:
    """The stack to show first.

    The NeXus default plottable signal (``@default``/``@signal``), else ``/entry/data/data``,
    else ``/exchange/data``, else :func:`choose_default` over a bounded walk (NXdata before
    NXdetector before other groups before NXmonitor; the largest frame; the most frames);
    ``None`` if there is no numeric dataset with ndim >= 2. Well-known paths are tried before
    any walk.
    """
    f = _file(source)
    with _lock(source), metadata_budget(source):
        try:
            nexus = nexus_default(f)
        except (KeyError, OSError, ValueError, RuntimeError):
            nexus = None
        for path in ([nexus] if nexus else []) + list(KNOWN_STACKS):
            if _candidate(f, path) is not None:
                return _candidate(f, path).path
    if candidates is None:
        candidates = stack_candidates(source)
    return choose_default(candidates)
