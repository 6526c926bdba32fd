"""The lazy tree, describe() (the ``info --json`` document) and stack detection."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import hdf5_files  # noqa: E402

from dashboard.hdf5.source import BLOCK_SIZE, open_source  # noqa: E402
from dashboard.hdf5.describe import describe, format_tree  # noqa: E402
from dashboard.hdf5.stacks import default_stack, stack_candidates  # noqa: E402
from dashboard.hdf5.tree import attr_value, child_names, children  # noqa: E402

DEFAULTS = hdf5_files.SHARED_STACKS
SHARED = list(DEFAULTS)


def _h5py_view(path: Path) -> dict:
    """Independent reading of every object with h5py: path -> (kind, shape, dtype, chunks, filters, attrs)."""
    out = {}
    with h5py.File(path) as f:
        out["/"] = ("group", None, None, None, [], sorted(f.attrs))

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                plist = obj.id.get_create_plist()
                filters = [plist.get_filter(k)[0] for k in range(plist.get_nfilters())]
                dtype = str(obj.dtype) if obj.dtype.fields is None else "compound"
                out["/" + name] = ("dataset", list(obj.shape) if obj.shape is not None else None,
                                   dtype, list(obj.chunks) if obj.chunks else None, filters,
                                   sorted(obj.attrs))
            else:
                out["/" + name] = ("group", None, None, None, [], sorted(obj.attrs))

        f.visititems(visit)
    return out


@pytest.mark.parametrize("name", SHARED)
def test_describe_matches_h5py(s3, bucket, testdata, name):
    s3.client.upload_file(str(testdata / name), bucket, name)
    doc = describe(f"s3://{bucket}/{name}", s3=s3)
    json.dumps(doc)  # the info --json document is plain JSON
    assert doc["default_stack"] == DEFAULTS[name]
    assert not doc["truncated"]
    truth = _h5py_view(testdata / name)
    got = {n["path"]: (n["kind"], n["shape"], n["dtype"], n["chunks"],
                       [f["id"] for f in n["filters"]], sorted(n["attrs"])) for n in doc["nodes"]}
    assert got == truth
    for node in doc["nodes"]:
        assert set(node) >= {"path", "kind", "shape", "dtype", "chunks", "filters", "attrs"}
    text = format_tree(doc)
    assert f"default stack: {DEFAULTS[name]}" in text if DEFAULTS[name] else "default stack: none" in text


def test_describe_details(s3, bucket, testdata):
    s3.client.upload_file(str(testdata / "eiger_bitshuffle_lz4.h5"), bucket, "e.h5")
    s3.client.upload_file(str(testdata / "scalar.h5"), bucket, "s.h5")
    nodes = {n["path"]: n for n in describe(f"s3://{bucket}/e.h5", s3=s3)["nodes"]}
    data = nodes["/entry/data/data"]
    assert data["filters"] == [{"id": 32008, "name": "Bitshuffle"}]
    assert data["logical_bytes"] == 2167 * 2070 * 4
    with h5py.File(testdata / "eiger_bitshuffle_lz4.h5") as f:
        assert data["stored_bytes"] == f["/entry/data/data"].id.get_storage_size()
    assert nodes["/entry"]["attrs"] == {"NX_class": "NXentry"}  # bytes decoded to text
    root = {n["path"]: n for n in describe(f"s3://{bucket}/s.h5", s3=s3)["nodes"]}["/"]
    assert root["attrs"] == {"attr1": 42, "attr2": "hello"}


def test_links_virtual_and_attribute_previews(tmp_path):
    path = hdf5_files.write_links(tmp_path / "links.h5")
    doc = describe(path)
    nodes = {n["path"]: n for n in doc["nodes"]}
    assert nodes["/soft"]["kind"] == "soft_link" and nodes["/soft"]["target"] == "/entry/stack"
    assert nodes["/dangling"]["kind"] == "dangling_link"
    assert nodes["/external"]["kind"] == "external_link"
    assert nodes["/external"]["target"] == "other_file.h5:/data"
    assert nodes["/virtual"]["kind"] == "dataset" and nodes["/virtual"]["virtual"] is True
    attrs = nodes["/"]["attrs"]
    assert attrs["title"] == "links and things" and attrs["bytes"] == "bytes text"
    assert attrs["small"] == [1, 2, 3]
    assert attrs["long"].startswith("<float64 array (1000,): [0.0, 1.0,") and "…" in attrs["long"]
    assert doc["default_stack"] == "/entry/stack"
    text = format_tree(doc)
    assert "dangling link" in text and "[virtual]" in text and "external link" in text
    assert attr_value("x" * 500).endswith("…") and len(attr_value("x" * 500)) == 201


def test_group1k_lists_lazily(s3, bucket, testdata):
    path = testdata / "group1k.h5"
    size = path.stat().st_size
    s3.client.upload_file(str(path), bucket, "g.h5")
    url = f"s3://{bucket}/g.h5"

    full = open_source(url, s3=s3)
    full.file.visititems(lambda name, obj: None)
    full_reads = full.metadata_reads
    full.close()

    source = open_source(url, s3=s3)
    try:
        opened = source.stats.snapshot()
        assert opened["get_requests"] == 1  # the first block holds the superblock and root
        names = child_names(source, "/")
        assert len(names) == 1000 and names[0] == "g0000"
        listed = source.stats.snapshot()
        # the block cache bounds the requests by the file's size, never one per group
        assert listed["get_requests"] <= math.ceil(size / BLOCK_SIZE) + 1
        assert listed["bytes_fetched"] <= size
        before = source.metadata_reads
        page = children(source, "/", offset=100, limit=20)
        assert [n.path for n in page] == [f"/g{k:04d}" for k in range(100, 120)]
        assert all(n.kind == "group" for n in page)
        assert source.metadata_reads - before <= 3 * 20  # only the page's headers were read
        assert source.metadata_reads < full_reads / 4
        assert children(source, "/g0500") == []
    finally:
        source.close()

    source = open_source(url, s3=s3)
    try:
        doc = describe(source, limit=200)
        assert doc["truncated"] and len(doc["nodes"]) == 200 and doc["node_limit"] == 200
        assert all(n["path"].count("/") == 1 for n in doc["nodes"])  # no group was entered
        assert source.metadata_reads < full_reads / 3
        assert "only the first 200 nodes" in format_tree(doc)
    finally:
        source.close()


def test_default_stack_rules(tmp_path):
    cases = {
        hdf5_files.write_nexus(tmp_path / "nexus.h5"): "/scan/det/frames",  # beats a bigger decoy
        hdf5_files.write_largest(tmp_path / "largest.h5"): "/b/c/large3d",  # 3-D beats bigger 2-D
        hdf5_files.write_only2d(tmp_path / "only2d.h5"): "/image",  # else the largest 2-D
        hdf5_files.write_userblock(tmp_path / "dx.h5"): "/exchange/data",
    }
    for path, want in cases.items():
        with open_source(path) as source:
            assert default_stack(source) == want, path.name
    with open_source(tmp_path / "largest.h5") as source:
        found = {c.path: c.n_frames for c in stack_candidates(source)}
    assert found == {"/a/small3d": 2, "/b/c/large3d": 4, "/big2d": 1}


def test_nexus_default_found_without_walking(tmp_path):
    path = hdf5_files.write_nexus(tmp_path / "nexus.h5")
    with h5py.File(path, "a") as f:
        for k in range(300):
            f.create_group(f"many/g{k}")
    with open_source(path) as source:
        import dashboard.hdf5.stacks as tree  # where default_stack finds walk

        calls = []
        original = tree.walk
        tree.walk = lambda *a, **k: calls.append(1) or original(*a, **k)
        try:
            assert default_stack(source) == "/scan/det/frames"
        finally:
            tree.walk = original
        assert calls == []


def _nexus_groups(path, groups):
    """``groups``: {group path: (NX_class or None, {dataset name: shape})}; no @default/@signal."""
    with h5py.File(path, "w") as f:
        f.create_group("entry").attrs["NX_class"] = "NXentry"
        for group, (cls, datasets) in groups.items():
            g = f.create_group(group)
            if cls:
                g.attrs["NX_class"] = cls
            for name, shape in datasets.items():
                g.create_dataset(name, shape=shape, dtype="uint16")
    return path


def test_default_stack_prefers_nxdata_then_nxdetector_and_never_a_monitor_first(tmp_path):
    same = {"data": (10, 32, 32)}
    cases = [
        ({"/entry/a_mon": ("NXmonitor", same), "/entry/measurement": ("NXdata", same)},
         "/entry/measurement/data"),
        ({"/entry/a_mon": ("NXmonitor", same), "/entry/b_det": ("NXdetector", same)},
         "/entry/b_det/data"),
        ({"/entry/a_mon": ("NXmonitor", {"data": (50, 64, 64)}), "/entry/plain": (None, same)},
         "/entry/plain/data"),  # a monitor comes last, however big
        # the same class: the largest frame, then the most frames
        ({"/entry/m": ("NXdata", {"wide": (5, 32, 64), "long": (90, 32, 32)})}, "/entry/m/wide"),
        ({"/entry/m": ("NXdata", {"few": (5, 32, 32), "many": (90, 32, 32)})}, "/entry/m/many"),
    ]
    for k, (groups, want) in enumerate(cases):
        path = _nexus_groups(tmp_path / f"case{k}.h5", groups)
        with open_source(path) as source:
            assert default_stack(source) == want, groups
            assert describe(source)["default_stack"] == want, groups
