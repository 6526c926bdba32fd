"""Filter, sort and directory grouping of listings: pure functions on hand-made lists."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone

import pytest

from dashboard.errors import EchoError
from dashboard.storage.listing import (
    ListingError,
    directories,
    filter_objects,
    human_size,
    sort_objects,
)
from dashboard.storage.s3 import ObjectInfo

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


def obj(key: str, size: int = 1, minutes: int = 0) -> ObjectInfo:
    return ObjectInfo(key=key, size=size, last_modified=T0 + timedelta(minutes=minutes), etag="e")


OBJECTS = [
    obj("raw/2024/Scan_001.h5", size=300, minutes=5),
    obj("raw/2024/scan_002.HDF5", size=100, minutes=1),
    obj("raw/2024/notes.txt", size=50, minutes=9),
    obj("raw/2025/flat.nxs", size=100, minutes=3),
    obj("raw/2025/deep/er/dark.hdf", size=7, minutes=3),
    obj("raw2/other.h5", size=999, minutes=0),
    obj("processed/scan_001.tif", size=20, minutes=2),
    obj("top.H5", size=100, minutes=7),
    obj("README", size=1, minutes=8),
]


def keys(objs):
    return [o.key for o in objs]


# -- filter ------------------------------------------------------------------------------


def test_filter_defaults_keep_only_hdf5_in_original_order():
    assert keys(filter_objects(OBJECTS)) == [
        "raw/2024/Scan_001.h5",
        "raw/2024/scan_002.HDF5",
        "raw/2025/flat.nxs",
        "raw/2025/deep/er/dark.hdf",
        "raw2/other.h5",
        "top.H5",
    ]


def test_filter_all_objects_when_hdf5_only_is_off():
    assert keys(filter_objects(OBJECTS, hdf5_only=False)) == keys(OBJECTS)


@pytest.mark.parametrize(
    ("directory", "expected"),
    [
        ("raw/2024/", ["raw/2024/Scan_001.h5", "raw/2024/scan_002.HDF5", "raw/2024/notes.txt"]),
        # No trailing slash: still a directory, so "raw2/" is not inside "raw".
        ("raw", ["raw/2024/Scan_001.h5", "raw/2024/scan_002.HDF5", "raw/2024/notes.txt",
                 "raw/2025/flat.nxs", "raw/2025/deep/er/dark.hdf"]),
        ("raw/2025/deep/", ["raw/2025/deep/er/dark.hdf"]),
        ("missing/", []),
        ("", keys(OBJECTS)),
    ],
)
def test_filter_directory(directory, expected):
    assert keys(filter_objects(OBJECTS, directory=directory, hdf5_only=False)) == expected


@pytest.mark.parametrize("keyword", ["scan", "SCAN", "Scan", "  sCaN "])
def test_filter_keyword_is_case_insensitive(keyword):
    assert keys(filter_objects(OBJECTS, keyword=keyword, hdf5_only=False)) == [
        "raw/2024/Scan_001.h5",
        "raw/2024/scan_002.HDF5",
        "processed/scan_001.tif",
    ]


def test_filter_keyword_matches_directories_in_the_key_too():
    assert keys(filter_objects(OBJECTS, keyword="2025")) == [
        "raw/2025/flat.nxs",
        "raw/2025/deep/er/dark.hdf",
    ]


def test_filter_combines_directory_keyword_and_hdf5():
    assert keys(filter_objects(OBJECTS, directory="raw/", keyword="_00", hdf5_only=True)) == [
        "raw/2024/Scan_001.h5",
        "raw/2024/scan_002.HDF5",
    ]
    assert filter_objects(OBJECTS, directory="processed/", keyword="scan") == []
    assert keys(filter_objects(OBJECTS, directory="processed/", keyword="scan",
                               hdf5_only=False)) == ["processed/scan_001.tif"]


@pytest.mark.parametrize(
    ("key", "is_hdf5"),
    [("a.h5", True), ("a.H5", True), ("a.hdf5", True), ("a.HDF5", True), ("a.nxs", True),
     ("a.NXS", True), ("a.hdf", True), ("a.Hdf", True), ("a.h5.txt", False), ("a.h55", False),
     ("h5", False), ("a/", False), ("a.tiff", False)],
)
def test_hdf5_suffixes(key, is_hdf5):
    assert keys(filter_objects([obj(key)])) == ([key] if is_hdf5 else [])


def test_filter_does_not_modify_input():
    before = copy.deepcopy(OBJECTS)
    filter_objects(OBJECTS, directory="raw/", keyword="x")
    sort_objects(OBJECTS, by="size", descending=True)
    assert OBJECTS == before


# -- sort --------------------------------------------------------------------------------


def test_sort_by_name_both_directions():
    objs = [obj("b.h5"), obj("A.h5"), obj("a/z.h5"), obj("a.h5"), obj("C.h5")]
    # Case-insensitive, then case-sensitive ("A.h5" < "a.h5" in code points).
    # "." (0x2E) sorts before "/" (0x2F), so "a.h5" precedes "a/z.h5".
    assert keys(sort_objects(objs)) == ["A.h5", "a.h5", "a/z.h5", "b.h5", "C.h5"]
    assert keys(sort_objects(objs, by="name", descending=True)) == [
        "C.h5", "b.h5", "a/z.h5", "a.h5", "A.h5"
    ]


def test_sort_by_size_ties_by_key_both_directions():
    assert keys(sort_objects(OBJECTS, by="size")) == [
        "README",                      # 1
        "raw/2025/deep/er/dark.hdf",   # 7
        "processed/scan_001.tif",      # 20
        "raw/2024/notes.txt",          # 50
        "raw/2024/scan_002.HDF5",      # 100, ties by key ascending
        "raw/2025/flat.nxs",           # 100
        "top.H5",                      # 100
        "raw/2024/Scan_001.h5",        # 300
        "raw2/other.h5",               # 999
    ]
    assert keys(sort_objects(OBJECTS, by="size", descending=True)) == [
        "raw2/other.h5",
        "raw/2024/Scan_001.h5",
        "raw/2024/scan_002.HDF5",      # ties still by key ascending
        "raw/2025/flat.nxs",
        "top.H5",
        "raw/2024/notes.txt",
        "processed/scan_001.tif",
        "raw/2025/deep/er/dark.hdf",
        "README",
    ]


def test_sort_by_date_ties_by_key_both_directions():
    assert keys(sort_objects(OBJECTS, by="date")) == [
        "raw2/other.h5",               # +0
        "raw/2024/scan_002.HDF5",      # +1
        "processed/scan_001.tif",      # +2
        "raw/2025/deep/er/dark.hdf",   # +3, tie: "deep/..." < "flat.nxs"
        "raw/2025/flat.nxs",           # +3
        "raw/2024/Scan_001.h5",        # +5
        "top.H5",                      # +7
        "README",                      # +8
        "raw/2024/notes.txt",          # +9
    ]
    assert keys(sort_objects(OBJECTS, by="date", descending=True)) == [
        "raw/2024/notes.txt",
        "README",
        "top.H5",
        "raw/2024/Scan_001.h5",
        "raw/2025/deep/er/dark.hdf",
        "raw/2025/flat.nxs",
        "processed/scan_001.tif",
        "raw/2024/scan_002.HDF5",
        "raw2/other.h5",
    ]


def test_sort_ties_do_not_depend_on_input_order():
    objs = [obj("c.h5", 5), obj("a.h5", 5), obj("b.h5", 5)]
    for ordering in (objs, objs[::-1], objs[1:] + objs[:1]):
        assert keys(sort_objects(ordering, by="size")) == ["a.h5", "b.h5", "c.h5"]
        assert keys(sort_objects(ordering, by="date", descending=True)) == ["a.h5", "b.h5", "c.h5"]


def test_sort_accepts_any_iterable_and_empty():
    assert sort_objects(iter([]), by="date") == []
    assert keys(sort_objects(iter(OBJECTS[:2]), by="size")) == [
        "raw/2024/scan_002.HDF5", "raw/2024/Scan_001.h5"
    ]


@pytest.mark.parametrize("by", ["Name", "mtime", "", None])
def test_sort_rejects_unknown_keys_with_a_clear_error(by):
    with pytest.raises(ListingError) as info:
        sort_objects(OBJECTS, by=by)
    assert isinstance(info.value, EchoError)
    assert str(info.value) == (
        f"Cannot sort objects by {by!r}; choose one of: name, size, date."
    )


# -- directories -------------------------------------------------------------------------


def test_directories_at_every_depth_sorted():
    assert directories(OBJECTS) == [
        "processed/",
        "raw/",
        "raw/2024/",
        "raw/2025/",
        "raw/2025/deep/",
        "raw/2025/deep/er/",
        "raw2/",
    ]


def test_directories_of_flat_and_empty_listings():
    assert directories([]) == []
    assert directories([obj("a.h5"), obj("b")]) == []


def test_directories_include_folder_markers_and_keep_odd_segments():
    # "x/" is a folder-marker object; "a//b.h5" has an empty segment, kept literally.
    assert directories([obj("x/"), obj("a//b.h5")]) == ["a/", "a//", "x/"]


# -- human_size --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (1536, "1.5 kB"), (1_500_000, "1.5 MB"),
     (999_999, "1.0 MB"), (2_000_000_000, "2.0 GB"), (5 * 10**12, "5.0 TB"),
     (3 * 10**18, "3000.0 PB")],
)
def test_human_size(n, text):
    assert human_size(n) == text


def test_human_size_binary_units_for_hdf5_sizes():
    assert [human_size(n, binary=True) for n in (None, 0, 1023, 1024, 1536, 5 * 2**20)] == [
        "?", "0 B", "1023 B", "1.0 KiB", "1.5 KiB", "5.0 MiB"]
