"""Contrast limits: the pure functions against numpy, and ViewerState's three modes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from test_state_viewer import load, local, session  # noqa: F401 - the session fixture

from dashboard.analysis.contrast import (
    N_SAMPLES, clamp_limits, percentile_limits, sample_indices, stack_limits, widen,
)
from dashboard.demo.store import NEXUS_KEY, SHORT_KEY
from dashboard.hdf5.stack import open_stack


SHAPES = st.tuples(st.integers(1, 30), st.integers(1, 30))


@settings(max_examples=80, deadline=None)
@given(st.sampled_from([np.uint8, np.uint16, np.int32]).flatmap(lambda dtype: arrays(dtype, SHAPES))
       | arrays(np.float32, SHAPES, elements=st.floats(-1e6, 1e6, width=32)),
       st.floats(0, 50), st.floats(50, 100))
def test_percentile_limits_equal_numpy(frame, low, high):
    """Small unsigned integers are counted, other types sorted: both as numpy's percentile."""
    original = frame.copy()
    lo, hi = percentile_limits(frame, low, high)
    expected = np.percentile(frame, [low, high])
    if expected[1] > expected[0]:
        assert (lo, hi) == pytest.approx(tuple(expected))
    else:  # a constant frame (or a flat percentile range): widened around the value
        assert lo < expected[0] + 1e-9 and hi > lo and (lo + hi) / 2 == pytest.approx(expected[0])
    np.testing.assert_array_equal(frame, original)  # never modifies its input


def test_percentile_limits_ignore_non_finite_values_and_sample_large_frames():
    frame = np.arange(10_000, dtype=np.float32).reshape(100, 100)
    frame[0, :5] = [np.nan, np.inf, -np.inf, np.nan, np.nan]
    finite = frame[np.isfinite(frame)]
    assert percentile_limits(frame, 2, 98) == pytest.approx(tuple(np.percentile(finite, [2, 98])))
    assert percentile_limits(np.full((3, 3), np.nan)) == (0.0, 1.0)
    big = np.random.default_rng(1).normal(1000, 50, (1000, 1000))
    sampled = percentile_limits(big, max_pixels=40_000)  # every 5th row and column
    assert sampled == pytest.approx(tuple(np.percentile(big[::5, ::5], [1, 99])))
    with pytest.raises(ValueError, match="within 0-100"):
        percentile_limits(frame, -1, 50)
    with pytest.raises(ValueError, match="above the high"):
        percentile_limits(frame, 60, 50)


def test_sample_indices_are_even_and_include_both_ends():
    assert sample_indices(5, 16).tolist() == [0, 1, 2, 3, 4]
    picked = sample_indices(1000, 16)
    assert len(picked) == 16 and picked[0] == 0 and picked[-1] == 999
    assert np.all(np.diff(picked) >= 66) and np.all(np.diff(picked) <= 67)
    assert sample_indices(0, 16).size == 0


def test_stack_limits_equal_numpy_on_the_sampled_frames(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.gamma(2.0, 300.0, (50, 40, 30)).astype(np.uint16)
    data[::7] += 2000  # bright frames that per-frame limits would hide
    picked = sample_indices(50, 8)
    expected = tuple(np.percentile(data[picked], [1, 99]))
    assert stack_limits(data, n_samples=8) == pytest.approx(expected)
    assert stack_limits(list(data), n_samples=8) == pytest.approx(expected)
    assert stack_limits(data, 5, 95, n_samples=100) == pytest.approx(
        tuple(np.percentile(data, [5, 95])))
    path = tmp_path / "stack.h5"
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset("/entry/data/data", data=data, chunks=(1, 40, 30))
    with open_stack(path) as stack:
        assert stack_limits(stack, n_samples=8) == pytest.approx(expected)
        assert stack_limits(stack, cancelled=lambda: True) is None


def test_clamp_and_widen():
    assert clamp_limits((10, 2)) == (2.0, 10.0)
    assert clamp_limits((5, 5)) == (4.5, 5.5)
    assert widen(1e9, 1e9) == (1e9 - 1000, 1e9 + 1000)
    assert clamp_limits(None) is None
    with pytest.raises(ValueError, match="finite"):
        clamp_limits((0, float("nan")))


@pytest.mark.slow
def test_percentile_mode_follows_each_frame(session, demo):
    v = load(session, NEXUS_KEY)
    data = local(demo, NEXUS_KEY)
    assert v.contrast_mode == "percentile" and v.percentiles == (1.0, 99.0)
    assert v.wait_for_frame(0)
    assert v.contrast == pytest.approx(tuple(np.percentile(data[0], [1, 99])))
    for i in (5, 31):
        v.index = i
        assert v.wait_for_frame(i)
        assert v.contrast == pytest.approx(tuple(np.percentile(data[i], [1, 99])))
    v.percentiles = (5.0, 90.0)
    assert v.contrast == pytest.approx(tuple(np.percentile(data[31], [5, 90])))
    assert v.contrast_mode == "percentile" and "5–90 % of each frame" in v.contrast_status
    v.percentiles = (80.0, 20.0)  # reversed (e.g. from a link): put in order
    assert v.percentiles == (20.0, 80.0)


def test_locked_limits_hold_across_frames_and_follow_the_stack(session, demo):
    v = load(session, NEXUS_KEY)
    data = local(demo, NEXUS_KEY)
    assert v.wait_for_frame(0)
    v.contrast_mode = "locked"
    assert session.wait(60)
    picked = sample_indices(len(data), N_SAMPLES)
    locked = tuple(np.percentile(data[picked], [1, 99]))
    assert v.contrast == pytest.approx(locked)
    assert v.contrast_status.startswith(f"Locked: 1–99 % of {N_SAMPLES} frames")
    for i in (1, 20, 39):
        v.index = i
        assert v.wait_for_frame(i)
        assert v.contrast == pytest.approx(locked)
    # Other percentiles come from the same sample: no frame is read again.
    assert session.wait(60)
    reads = v.stack.stats["frames_read"]
    v.percentiles = (5.0, 95.0)
    assert session.wait(60)
    assert v.contrast == pytest.approx(tuple(np.percentile(data[picked], [5, 95])))
    assert v.stack.stats["frames_read"] == reads
    assert v.contrast_status.startswith("Locked: 5–95 %")
    load(session, SHORT_KEY)  # another stack: locked again, on its own frames
    short = local(demo, SHORT_KEY)
    assert v.contrast_mode == "locked" and v.percentiles == (5.0, 95.0)
    assert v.contrast == pytest.approx(
        tuple(np.percentile(short[sample_indices(len(short), N_SAMPLES)], [5, 95])))


def test_manual_limits_switch_the_mode_and_stay(session, demo):
    v = load(session, NEXUS_KEY)
    assert v.wait_for_frame(0)
    v.contrast = (1500, 300)  # dragged or typed (reversed): ordered, mode becomes manual
    assert v.contrast == (300.0, 1500.0) and v.contrast_mode == "manual"
    assert v.contrast_status == "Manual limits"
    v.index = 9
    assert v.wait_for_frame(9) and v.contrast == (300.0, 1500.0)
    assert v.set_limits("lots", 2) == "Contrast limits must be two finite numbers."
    assert v.contrast == (300.0, 1500.0) and "finite" in v.contrast_status
    assert v.set_limits(100, 200.5) == "" and v.contrast == (100.0, 200.5)
    v.contrast_mode = "percentile"  # back to automatic: this frame's percentiles
    assert v.contrast == pytest.approx(
        tuple(np.percentile(local(demo, NEXUS_KEY)[9], [1, 99])))


@pytest.mark.parametrize("value", [(float("nan"), 100.0), (1.0, float("inf")),
                                   (float("-inf"), 50.0)])
def test_non_finite_percentiles_are_refused_and_the_contrast_stays(session, demo, value):
    v = load(session, NEXUS_KEY)
    assert v.wait_for_frame(0)
    limits = v.contrast
    with pytest.raises(ValueError, match=r"Percentiles \(%\) must be finite"):
        v.percentiles = value
    assert v.percentiles == (1.0, 99.0) and v.contrast == limits
    v.percentiles = (2.0, 98.0)  # still usable
    assert v.contrast == pytest.approx(
        tuple(np.percentile(local(demo, NEXUS_KEY)[0], [2, 98])))
