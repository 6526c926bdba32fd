"""Pure functions over lists of :class:`~dashboard.storage.s3.ObjectInfo`: filter, sort, group.

Listing (network) and these functions (no network, no state) are kept apart so that the
dashboard and the CLI can re-filter and re-sort a listing instantly, and so that the rules are
tested on hand-made lists.

Examples
--------
>>> from datetime import datetime, timezone
>>> t = datetime(2025, 1, 1, tzinfo=timezone.utc)
>>> objs = [ObjectInfo("scan/B.h5", 20, t, "e"), ObjectInfo("scan/a.nxs", 10, t, "e"),
...         ObjectInfo("notes.txt", 5, t, "e")]
>>> [o.key for o in filter_objects(objs, directory="scan/")]
['scan/B.h5', 'scan/a.nxs']
>>> [o.key for o in sort_objects(objs, by="size")]
['notes.txt', 'scan/a.nxs', 'scan/B.h5']
>>> directories(objs)
['scan/']
>>> human_size(1_500_000)
'1.5 MB'
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import EchoError
from .s3 import HDF5_SUFFIXES, ObjectInfo

__all__ = [
    "HDF5_SUFFIXES",
    "SORT_KEYS",
    "ListingError",
    "changes",
    "directories",
    "filter_objects",
    "human_size",
    "sort_objects",
]

#: The accepted values of ``sort_objects(by=...)``.
SORT_KEYS = ("name", "size", "date")


class ListingError(EchoError, ValueError):
    """A filter or sort option has an unusable value."""


def filter_objects(
    objects: Iterable[ObjectInfo],
    *,
    directory: str = "",
    keyword: str = "",
    hdf5_only: bool = True,
) -> list[ObjectInfo]:
    """Keep the objects under ``directory`` whose key contains ``keyword``.

    Parameters
    ----------
    objects : iterable of ObjectInfo
        A listing; not modified.
    directory : str
        A key prefix such as ``"raw/2024/"`` (a missing trailing ``/`` is added, so ``"raw"``
        does not match ``"raw2/x.h5"``); ``""`` keeps every directory.
    keyword : str
        Case-insensitive substring of the whole key; surrounding blanks are ignored and
        ``""`` keeps everything.
    hdf5_only : bool
        Keep only keys ending in ``.h5``, ``.hdf5``, ``.nxs`` or ``.hdf`` (any case).

    Returns
    -------
    list of ObjectInfo
        The kept objects, in their original order.
    """
    prefix = _as_directory(directory)
    needle = (keyword or "").strip().casefold()
    return [
        obj
        for obj in objects
        if obj.key.startswith(prefix)
        and (not needle or needle in obj.key.casefold())
        and (not hdf5_only or obj.is_hdf5)
    ]


def sort_objects(
    objects: Iterable[ObjectInfo], *, by: str = "name", descending: bool = False
) -> list[ObjectInfo]:
    """Sort a listing by name, size or date; ties are always broken by key, ascending.

    Parameters
    ----------
    objects : iterable of ObjectInfo
        A listing; not modified.
    by : {"name", "size", "date"}
        ``"name"`` is the full key compared case-insensitively (then case-sensitively), so a
        folder's files stay together; ``"size"`` is bytes; ``"date"`` is ``last_modified``.
    descending : bool
        Largest / newest / Z first. Ties keep ascending key order in both directions.

    Returns
    -------
    list of ObjectInfo

    Raises
    ------
    ListingError
        If ``by`` is not one of :data:`SORT_KEYS`.
    """
    if by not in SORT_KEYS:
        raise ListingError(
            f"Cannot sort objects by {by!r}; choose one of: {', '.join(SORT_KEYS)}."
        )
    by_key = sorted(objects, key=lambda o: o.key)
    if by == "name":
        return sorted(by_key, key=lambda o: (o.key.casefold(), o.key), reverse=descending)
    primary = (lambda o: o.size) if by == "size" else (lambda o: o.last_modified)
    # Python's sort is stable even with reverse=True, so equal sizes/dates stay in key order.
    return sorted(by_key, key=primary, reverse=descending)


def changes(before: dict[str, ObjectInfo], after: Iterable[ObjectInfo]) -> dict[str, str]:
    """What a new listing says happened since ``before`` (key → object): ``{key: "new"}`` for
    a key not listed before, ``{key: "changed"}`` for one whose ETag, size or date differs
    (a replaced object; a file written again as it grows). Removed keys are not reported.

    >>> from datetime import datetime, timezone
    >>> t = datetime(2026, 12, 1, tzinfo=timezone.utc)
    >>> old = {"a.h5": ObjectInfo("a.h5", 10, t, "e1")}
    >>> changes(old, [ObjectInfo("a.h5", 12, t, "e2"), ObjectInfo("b.h5", 5, t, "e3")])
    {'a.h5': 'changed', 'b.h5': 'new'}
    """
    found = {}
    for obj in after:
        was = before.get(obj.key)
        if was is None:
            found[obj.key] = "new"
        elif (was.etag, was.size, was.last_modified) != (obj.etag, obj.size, obj.last_modified):
            found[obj.key] = "changed"
    return found


def directories(objects: Iterable[ObjectInfo]) -> list[str]:
    """Every directory prefix of every key, at every depth, each ending in ``/``, sorted.

    ``"a/b/c.h5"`` contributes ``"a/"`` and ``"a/b/"``; a key ending in ``/`` (a "folder
    marker" object) contributes itself and its parents.
    """
    found: set[str] = set()
    for obj in objects:
        parts = obj.key.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            found.add("/".join(parts[:depth]) + "/")
    return sorted(found)


def human_size(n: int | float | None, *, binary: bool = False) -> str:
    """Bytes as a short string, the one byte formatter of the project.

    Decimal (SI) by default: ``0 B``, ``999 B``, ``1.5 kB``, ``1.5 MB``, ``2.0 GB``;
    ``binary=True``: ``1023 B``, ``1.5 KiB``, ``2.0 MiB`` (HDF5 storage sizes). ``None``: ``?``.
    """
    if n is None:
        return "?"
    n = float(n)
    base, units = (1024.0, ("KiB", "MiB", "GiB", "TiB", "PiB")) if binary else (
        1000.0, ("kB", "MB", "GB", "TB", "PB"))
    if abs(n) < (1024 if binary else 1000):
        return f"{int(n)} B"
    for unit in units:
        n /= base
        if abs(n) < (1023.95 if binary else 999.95) or unit == units[-1]:
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def _as_directory(directory: str) -> str:
    directory = directory or ""
    if directory and not directory.endswith("/"):
        directory += "/"
    return directory
