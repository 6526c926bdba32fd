"""The stack as an array: numpy indexing over (frame, row, column), a lazy ``dask.array`` whose
blocks are the file's chunks, and an ``xarray.DataArray`` with the file's axes as coordinates.

:class:`ArrayAccess` is mixed into :class:`~dashboard.hdf5.frames.FrameStack`. Indexing reads
through :meth:`~.regions.RegionReads.regions`, so only the chunks the selection touches are
fetched (tiles of a tiled file, one chunk per frame otherwise; cached frames cost nothing).
Frames are the stack's frames: a 4-D dataset's leading axes count as one.

>>> stack[10:20:2, 100:300, ::4]     # doctest: +SKIP
>>> stack.to_dask().mean(axis=0).compute()     # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import pickle
import threading
from collections.abc import Iterable

import numpy as np

from .errors import ObjectChanged
from .values import sibling

#: The axes of the array view, as xarray names them.
DIMS = ("frame", "row", "column")


def _axis(key, size: int, name: str) -> tuple[range, bool]:
    """``(indices, dropped)`` of one axis: an int (dropped, as numpy drops it) or a slice."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
        i = int(key)
        if not -size <= i < size:
            raise IndexError(f"{name} {i} is out of range: the axis has {size}")
        i %= size
        return range(i, i + 1), True
    if isinstance(key, slice):
        return range(*key.indices(size)), False
    raise TypeError(f"a stack is indexed with ints and slices over ({', '.join(DIMS)}), "
                    f"not {type(key).__name__}")


def _within(indices: range, low: int) -> slice:
    """``indices`` as a slice of a box that starts at ``low``."""
    stop = indices.stop - low
    return slice(indices.start - low, stop if stop >= 0 else None, indices.step)


def _key(key) -> tuple:
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        at = key.index(Ellipsis)
        key = key[:at] + (slice(None),) * (len(DIMS) - len(key) + 1) + key[at + 1:]
    if len(key) > len(DIMS):
        raise IndexError(f"too many indices: a stack has {len(DIMS)} axes ({', '.join(DIMS)})")
    return key + (slice(None),) * (len(DIMS) - len(key))


class ArrayAccess:
    """Mixed into :class:`~dashboard.hdf5.frames.FrameStack` (uses ``regions``, ``frame_shape``,
    ``dtype``, ``chunks``, ``spec``, ``source``, ``dataset``)."""

    @property
    def array_shape(self) -> tuple[int, int, int]:
        """``(frames, rows, columns)``: the shape :meth:`__getitem__` indexes."""
        return (len(self), *self.frame_shape)

    def __getitem__(self, key) -> np.ndarray:
        """``stack[frames, rows, columns]`` with numpy's semantics for ints and slices (steps,
        negative indices, fewer indices than axes, ``...``); equal to h5py's result on the same
        selection. Reads only the chunks the selection touches."""
        shape = self.array_shape
        axes = [_axis(k, size, name) for k, size, name in zip(_key(key), shape, DIMS)]
        (frames, _), (rows, _), (cols, _) = axes
        out = np.empty((len(frames), len(rows), len(cols)), dtype=self.dtype)
        if out.size:
            r0, c0 = min(rows), min(cols)
            box = ((r0, max(rows) + 1), (c0, max(cols) + 1))
            inside = (_within(rows, r0), _within(cols, c0))
            for k, region in enumerate(self.regions(frames, *box)):
                out[k] = region[inside]
        return out[tuple(0 if dropped else slice(None) for _, dropped in axes)]

    # -- dask --------------------------------------------------------------------------------

    def block_shape(self) -> tuple[int, int, int]:
        """The dask blocks: the file's chunks (frames, rows, columns), else a frame each."""
        chunks = self.chunks
        if chunks is not None and len(chunks) == len(DIMS):
            return tuple(int(c) for c in chunks)
        return (1, *self.frame_shape)

    def to_dask(self):
        """A lazy ``dask.array`` of the stack, one block per chunk of the file.

        Computing on local threads reads through this stack; on a ``distributed`` cluster each
        worker process opens the file once from :meth:`spec` (as a batch's workers do) and
        keeps it for the array's blocks. The graph's keys name the file, never its keys.
        """
        import dask.array as da
        from dask.base import tokenize

        source = StackArray(self.spec(), self.array_shape, self.dtype, opened=self)
        name = "echo-stack-" + tokenize(self.url, self.dataset, self.etag, self.block_shape())
        return da.from_array(source, chunks=self.block_shape(), name=name, lock=False,
                             asarray=True, meta=np.empty((0, 0, 0), dtype=self.dtype))

    def to_xarray(self):
        """An ``xarray.DataArray`` over :meth:`to_dask`, dims ``frame``, ``row``, ``column``,
        with the file's axes as coordinates (NeXus ``@axes`` of the NXdata group, or a
        Data Exchange ``@axes = "theta:y:x"`` on the dataset). Needs xarray."""
        try:
            import xarray as xr
        except ImportError:
            raise ImportError("to_xarray() needs xarray: pip install xarray") from None

        coords = {name: (DIMS[axis], values)
                  for axis, name, values in axes_of(self.source, self.dataset, self.array_shape)}
        return xr.DataArray(self.to_dask(), dims=DIMS, coords=coords,
                            name=self.dataset.rsplit("/", 1)[-1],
                            attrs={"url": self.url, "dataset": self.dataset})


class StackArray:
    """What ``dask.array.from_array`` slices: shape, dtype and ``__getitem__``, picklable.

    Unpickled on a worker it opens the stack from the spec once per process (kept in
    :data:`_OPENED`); in the process that made it, it uses the stack it came from.
    """

    def __init__(self, spec, shape, dtype, *, opened=None):
        self.spec, self.shape, self.dtype = spec, tuple(shape), np.dtype(dtype)
        self.ndim = len(self.shape)
        self._opened = opened

    def __getstate__(self):
        return {"spec": self.spec, "shape": self.shape, "dtype": self.dtype}

    def __setstate__(self, state):
        self.__init__(state["spec"], state["shape"], state["dtype"])

    def __dask_tokenize__(self):
        return ("echo-stack", self.spec.url, self.spec.dataset, self.shape, str(self.dtype))

    def __repr__(self) -> str:
        return f"StackArray({self.spec!r}, shape={self.shape})"

    def __getitem__(self, key) -> np.ndarray:
        stack = self._opened
        if stack is not None and not getattr(stack, "_closed", False):
            return stack[key]
        name, stack = _open(self.spec)
        try:
            return stack[key]
        except ObjectChanged:
            _forget(name, stack)  # replaced on the server: the next block opens the new one
            raise


#: Stacks opened on this process (a worker), by a digest of their whole spec (keys included:
#: two users' arrays of one file never share a handle).
_OPENED: dict = {}
_OPENED_LOCK = threading.Lock()


def _open(spec):
    """``(name, stack)``: the stack of ``spec`` in this process, opened once."""
    name = hashlib.sha256(pickle.dumps(spec)).hexdigest()
    with _OPENED_LOCK:
        stack = _OPENED.get(name)
        if stack is None or stack._closed:
            stack = _OPENED[name] = spec.open(prefetch=False)
        return name, stack


def _forget(name: str, stack) -> None:
    with _OPENED_LOCK:
        if _OPENED.get(name) is stack:
            del _OPENED[name]
    stack.close()


def axes_of(source, dataset: str, shape) -> Iterable[tuple[int, str, np.ndarray]]:
    """``(axis, name, values)`` of each axis the file names for ``dataset``: NeXus ``@axes``
    on its NXdata group (``["time", ".", "."]``, or ``@<name>_indices``), else a Data Exchange
    ``@axes = "theta:y:x"`` on the dataset; only 1-D numeric siblings of the axis' length."""
    with source.h5() as file:
        dset = file.get(dataset)
        if dset is None:
            return []
        group = dset.parent
        names = _names(group.attrs.get("axes")) if group.attrs.get("signal") is not None else []
        if not names:
            names = _names(dset.attrs.get("axes"))
        found = []
        for axis, name in enumerate(names[:len(shape)]):
            indices = group.attrs.get(f"{name}_indices")
            if indices is not None and np.ndim(indices) == 0:
                axis = int(indices)
            node = sibling(group, name)
            if (node is None or len(node.shape) != 1
                    or node.shape[0] != shape[axis] or node.dtype.kind not in "uif"):
                continue
            found.append((axis, name, np.asarray(node[()])))
        return found


def _names(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value.split(":") if ":" in value else [value]
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in value]
