"""The value of a dataset, as H5Web and silx show it: small values whole, larger ones as a
bounded preview, odd types in a readable form or a one-line reason.

:func:`read_value` never fetches more than :data:`VALUE_BYTES` of the object (the file's block
cache aside) and reads at most :data:`MAX_ELEMENTS` elements: a 10⁹-element array, a compound
table of millions of rows or a gigabyte string costs a bounded read that says what it left out.
Reads go through the file's ranged, cached path like every other read.

>>> value = read_value(source, "/entry/instrument/monochromator/energy")   # doctest: +SKIP
>>> value.text()                                                           # doctest: +SKIP
'30.0 keV'
"""

from __future__ import annotations

from dataclasses import dataclass, field

import h5py
import numpy as np

from .errors import HDF5Error
from .metadata import small_attr
from .rangefile import OverBudget
from .tree import through_external

#: Bytes a value may fetch at most (cached blocks are free).
VALUE_BYTES = 1024**2
#: Elements shown at most (of a 1-D array, a table's cells, a list of strings).
MAX_ELEMENTS = 5000
#: A 2-D dataset is a table when it is at most this many rows and columns.
TABLE_ROWS, TABLE_COLUMNS = 200, 20
#: Characters of one string shown at most.
TEXT_CHARS = 2000


@dataclass
class Value:
    """What a dataset holds, ready to show.

    ``kind``: ``"scalar"`` (a number), ``"text"`` (a string), ``"strings"``, ``"array"`` (1-D
    numbers: a line plot), ``"table"`` (small 2-D numbers), ``"records"`` (compound rows) or
    ``"reason"`` (nothing shown: :attr:`reason` says why in one line).
    """

    path: str
    kind: str
    data: object = None
    shape: tuple = ()
    dtype: str = ""
    units: str | None = None
    axis: tuple | None = field(default=None, repr=False)  # (name, values) of a 1-D plot
    partial: str | None = None  # what a bounded preview left out, in words
    reason: str | None = None

    def text(self, limit: int = 12) -> str:
        """In words and numbers, for ``info --values`` and the dashboard (``limit`` items)."""
        units = f" {self.units}" if self.units else ""
        if self.kind == "reason":
            return self.reason or ""
        if self.kind == "scalar":
            return f"{_number(self.data)}{units}"
        if self.kind == "text":
            return _cut(self.data)
        if self.kind == "strings":
            items = [_cut(s, 80) for s in self.data[:limit]]
            text = ", ".join(repr(s) for s in items)
            more = len(self.data) > limit or self.partial
            return f"[{text}{', …' if more else ''}]" + _partial(self.partial)
        if self.kind == "array":
            data = np.asarray(self.data)
            head = ", ".join(_number(v) for v in data[:limit])
            stats = ""
            if data.size and data.dtype.kind in "uif":
                stats = f" (min {_number(data.min())}, max {_number(data.max())})"
            more = ", …" if data.size > limit else ""
            return f"[{head}{more}]{units}{stats}" + _partial(self.partial)
        rows = self.data if self.kind == "records" else np.asarray(self.data).tolist()
        shown = "; ".join(str(r) for r in rows[:limit])
        return f"{len(rows)} rows: {shown}{'; …' if len(rows) > limit else ''}" + _partial(
            self.partial)

    def to_json(self) -> dict:
        out = {"kind": self.kind, "text": self.text()}
        if self.units:
            out["units"] = self.units
        if self.partial:
            out["partial"] = self.partial
        return out


def read_value(source, path: str, *, budget: int = VALUE_BYTES) -> Value:
    """The value of the dataset at ``path`` in ``source`` (a Source or a FrameStack's), read
    within ``budget`` bytes. Groups and links that are not followed get a reason."""
    inner = getattr(source, "source", source)
    with inner.h5() as file, inner.metadata_budget(budget, total=budget):
        # Checked link by link first: resolving the path itself would open another file.
        crossed = through_external(file, path)
        if crossed is not None:
            return _reason(path, f"an external link ({crossed}), not followed")
        try:
            link = file.get(path, getlink=True)
        except (KeyError, OSError, RuntimeError):
            link = None
        if link is None:
            return _reason(path, "not in this file")
        try:
            node = file.get(path)
        except (KeyError, OSError, RuntimeError):
            node = None
        if node is None:
            return _reason(path, "a link that leads nowhere")
        if isinstance(node, h5py.Group):
            return _reason(path, "a group")
        try:
            return _dataset_value(node, path)
        except (OverBudget, OSError, RuntimeError, ValueError, TypeError) as exc:
            # h5py may wrap the budget's refusal in its own error: the file object kept it
            over = getattr(getattr(inner, "_rangefile", None), "error", None)
            if isinstance(exc, OverBudget) or isinstance(over, OverBudget):
                return _reason(path, f"reading it would take more than {budget // 1024} KiB "
                                     "(its chunks are too large to preview)")
            raise HDF5Error(f"Could not read {path}: {type(exc).__name__}") from None


def _dataset_value(dset: h5py.Dataset, path: str) -> Value:
    dtype, shape = dset.dtype, dset.shape
    base = dict(path=path, shape=tuple(shape or ()), dtype=_dtype_text(dtype),
                units=_text_attr(dset, "units"))
    if shape is None:
        return Value(**base, kind="reason", reason="empty: no data (a null dataspace)")
    if dset.size == 0:
        return Value(**base, kind="reason",
                     reason=f"empty (shape {'×'.join(map(str, shape))})")
    if h5py.check_ref_dtype(dtype) is not None:
        return Value(**base, kind="reason", reason="HDF5 object references (not followed)")
    string = h5py.check_string_dtype(dtype)
    vlen = h5py.check_vlen_dtype(dtype)
    if vlen is not None and string is None:
        return Value(**base, kind="reason",
                     reason=f"variable-length sequences of {vlen} (not shown)")
    if dtype.kind == "V" and dtype.fields is None:
        return Value(**base, kind="reason", reason=f"opaque data ({dtype.itemsize} bytes each)")
    if len(shape) > 2:
        return Value(**base, kind="reason", reason=f"{len(shape)}-D, "
                     f"{'×'.join(map(str, shape))}: an image stack, shown in Frames")
    plain = string is None and dtype.fields is None and h5py.check_enum_dtype(dtype) is None
    if plain and len(shape) == 2 and (shape[0] > TABLE_ROWS or shape[1] > TABLE_COLUMNS):
        return Value(**base, kind="reason", reason=f"2-D, {shape[0]}×{shape[1]}: an image, "
                     "shown in Frames (too large for a table)")
    count, selection, partial = _bounded(shape)
    data = dset[selection]
    if string is not None:
        texts = [_decode(v) for v in np.ravel(data)]
        if not shape:
            return Value(**base, kind="text", data=texts[0])
        return Value(**base, kind="strings", data=texts, partial=partial)
    if dtype.fields is not None:
        rows = np.ravel(data)
        names = list(dtype.names)
        records = [{n: _item(row[n]) for n in names} for row in rows]
        return Value(**base, kind="records", data=records, partial=partial)
    enum = h5py.check_enum_dtype(dtype)
    if enum is not None:
        names = {v: k for k, v in enum.items()}
        labels = [names.get(int(v), str(int(v))) for v in np.ravel(data)]
        if not shape:
            return Value(**base, kind="text", data=labels[0])
        return Value(**base, kind="strings", data=labels, partial=partial)
    if not shape:
        return Value(**base, kind="scalar", data=_item(data))
    if len(shape) == 1:
        return Value(**base, kind="array", data=np.asarray(data), partial=partial,
                     axis=_axis_of(dset, count))
    return Value(**base, kind="table", data=np.asarray(data), partial=partial)


def _bounded(shape) -> tuple[int, tuple, str | None]:
    """``(elements, selection, what was left out)``: at most :data:`MAX_ELEMENTS`."""
    if not shape:
        return 1, (), None
    if len(shape) == 1:
        n = min(shape[0], MAX_ELEMENTS)
        left = f"first {n} of {shape[0]} values" if n < shape[0] else None
        return n, (slice(0, n),), left
    rows = min(shape[0], max(1, MAX_ELEMENTS // max(1, shape[1])), TABLE_ROWS)
    cols = min(shape[1], TABLE_COLUMNS)
    left = (f"first {rows} of {shape[0]} rows, {cols} of {shape[1]} columns"
            if (rows, cols) != tuple(shape) else None)
    return rows * cols, (slice(0, rows), slice(0, cols)), left


def _axis_of(dset: h5py.Dataset, count: int):
    """``(name, values)``: a 1-D signal's NeXus axis (``@axes`` of its NXdata group naming a
    sibling of the same length), else None."""
    group = dset.parent
    signal = small_attr(group, "signal")
    if signal is None or _decode(signal) != dset.name.rsplit("/", 1)[-1]:
        return None
    axes = small_attr(group, "axes")
    names = [_decode(a) for a in np.ravel(axes)] if axes is not None else []
    for name in names[:1]:
        node = sibling(group, name)
        if node is not None and node.shape == dset.shape and node.dtype.kind in "uif":
            return name, np.asarray(node[:count])
    return None


def sibling(group: h5py.Group, name: str) -> h5py.Dataset | None:
    """The dataset ``name`` of ``group`` when it is a plain member (a hard link): a name from
    the file's own attributes never leads through a link to another file."""
    if not name or name == "." or "/" in name:
        return None
    try:
        link = group.get(name, getlink=True)
        node = group.get(name) if isinstance(link, h5py.HardLink) else None
    except (KeyError, OSError, RuntimeError):
        return None
    return node if isinstance(node, h5py.Dataset) else None


def _reason(path: str, reason: str) -> Value:
    return Value(path=path, kind="reason", reason=reason)


def _text_attr(obj, name: str) -> str | None:
    value = small_attr(obj, name)
    if value is None:
        return None
    text = _decode(value if np.ndim(value) == 0 else np.ravel(value)[0])
    return _cut(text, 40) or None


def _decode(value) -> str:
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _item(value):
    if isinstance(value, (bytes, np.bytes_)):
        return _decode(value)
    if isinstance(value, np.ndarray):
        return value.tolist() if value.size <= 16 else f"<{value.dtype} array {value.shape}>"
    if isinstance(value, np.generic):
        return value.item()
    return value


def _number(value) -> str:
    value = _item(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _cut(text: str, limit: int = TEXT_CHARS) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


def _partial(partial: str | None) -> str:
    return f" ({partial})" if partial else ""


def _dtype_text(dtype: np.dtype) -> str:
    if h5py.check_string_dtype(dtype) is not None:
        return "string"
    if dtype.fields is not None:
        return "compound"
    return str(dtype)
