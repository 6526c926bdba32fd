"""Reading a file's metadata within bounds: attribute previews, attribute and member names,
and the largest single metadata read allowed while listing (so that a 100 MB attribute or a
group of 100 000 members costs a bounded read, and says so)."""

from __future__ import annotations

import contextlib

import h5py
import numpy as np

#: Attribute arrays with more elements than this are shown as a truncated preview.
ATTR_ARRAY_LIMIT = 16
#: Strings longer than this are cut (with "…").
ATTR_TEXT_LIMIT = 200
#: Bytes an attribute (and any single metadata read while listing a node) may hold to be read:
#: larger attributes are named, not read (a file with a 100 MB attribute is listed at once).
ATTR_READ_BYTES = 1024**2
#: Attributes of one object that are read at most (the rest are counted, not read).
ATTR_COUNT_LIMIT = 64
#: Members of one group that are listed at most (a group of 100 000 is cut and says so).
GROUP_MEMBER_LIMIT = 10_000
#: Seconds a walk (the tree, the stack search) may take before it stops and says so. Generous:
#: the node and member limits bound a hostile file already, and a walk cut by time finds no
#: stack in the part it did not reach (10 s cut the search of an ordinary Data Exchange file
#: on a busy machine: one metadata read per node, over the network).
WALK_SECONDS = 60.0

def attr_value(value):
    """A JSON-friendly preview of an attribute value (decoded text, small arrays, cut previews)."""
    if isinstance(value, bytes | np.bytes_):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value if len(value) <= ATTR_TEXT_LIMIT else value[:ATTR_TEXT_LIMIT] + "…"
    if isinstance(value, np.generic):
        value = value.item()
        return attr_value(value) if isinstance(value, bytes) else value
    if isinstance(value, np.ndarray):
        if value.dtype.fields is not None:
            return f"<compound array {value.shape}>"
        flat = value.ravel()
        if flat.size <= ATTR_ARRAY_LIMIT:
            return [attr_value(v) for v in flat]
        head = ", ".join(str(attr_value(v)) for v in flat[:8])
        return f"<{value.dtype} array {value.shape}: [{head}, …]>"
    if isinstance(value, bool | int | float) or value is None:
        return value
    return str(value)


def attr_names(obj, limit: int = ATTR_COUNT_LIMIT) -> tuple[list[str], bool]:
    """The first ``limit`` attribute names of ``obj`` (and whether there are more), without
    reading the rest."""
    names: list[str] = []

    def visit(name: bytes):
        if len(names) >= limit:
            return True  # stop: there are more
        names.append(name.decode("utf-8", "replace"))
        return None

    more = h5py.h5a.iterate(obj.id, visit) is not None
    return names, more


def attrs_of(obj) -> dict:
    """Previews of ``obj``'s attributes: at most :data:`ATTR_COUNT_LIMIT` of them; one whose
    value is over :data:`ATTR_READ_BYTES` (or needs a larger read) is named, not read."""
    try:
        names, more = attr_names(obj)
    except Exception:  # noqa: BLE001 - dense attributes: a read over the metadata budget
        return {"…": "attributes not read: they hold more metadata than this viewer reads"}
    out = {}
    for name in names:
        try:
            size = obj.attrs.get_id(name).get_storage_size()
            out[name] = (f"<{size} bytes, not read>" if size > ATTR_READ_BYTES
                         else attr_value(obj.attrs[name]))
        except Exception as exc:  # noqa: BLE001 - odd types, or over the metadata budget
            out[name] = f"<unreadable attribute: {type(exc).__name__}>"
    if more:
        out["…"] = f"only the first {ATTR_COUNT_LIMIT} attributes are read"
    return out


def small_attr(obj, name: str):
    """``obj.attrs[name]`` if it exists and is at most :data:`ATTR_READ_BYTES`, else ``None``."""
    try:
        if name not in obj.attrs or obj.attrs.get_id(name).get_storage_size() > ATTR_READ_BYTES:
            return None
        return obj.attrs[name]
    except Exception:  # noqa: BLE001 - unreadable or over the metadata budget
        return None


def metadata_budget(source, nbytes: int = ATTR_READ_BYTES):
    """Inside the block, no single metadata read of ``source`` may be over ``nbytes`` (S3 and
    memory objects; see :meth:`~dashboard.hdf5.source.Source.metadata_budget`)."""
    inner = getattr(source, "source", source)
    budget = getattr(inner, "metadata_budget", None)
    return budget(nbytes) if callable(budget) else contextlib.nullcontext()


def member_names(group: h5py.Group, limit: int = GROUP_MEMBER_LIMIT) -> tuple[list[str], bool]:
    """The first ``limit`` member names of ``group`` in name order, and whether it has more;
    the rest of its index is not read."""
    names: list[str] = []

    def visit(name: bytes):
        if len(names) >= limit:
            return True
        names.append(name.decode("utf-8", "replace"))
        return None

    stopped, _index = group.id.links.iterate(visit)  # (what visit returned, where it stopped)
    return names, stopped is not None
