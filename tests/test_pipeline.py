"""The pipeline against hand-computed cases and independent formulas (scipy, numpy, loops)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from dashboard.processing import pipeline
from dashboard.processing.pipeline import (
    Stages,
    Workspace,
    flat_field,
    flat_from_frames,
    gaussian,
    linear_stretch,
    normalize,
    percentiles,
    process,
    to_uint8,
)

RNG = np.random.default_rng(20261124)


def frozen(a: np.ndarray) -> np.ndarray:
    """A read-only copy: any attempt to modify the input raises."""
    a = np.array(a)
    a.setflags(write=False)
    return a


# -- normalize -------------------------------------------------------------------------------

def test_normalize_uint16_divides_by_65535():
    frame = frozen(np.array([[0, 65535], [32768, 1]], dtype=np.uint16))
    out = normalize(frame)
    assert out.dtype == np.float32
    expected = np.array([[0.0, 1.0], [32768 / 65535, 1 / 65535]], dtype=np.float32)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize(("dtype", "maxval"), [(np.uint8, 255), (np.int16, 32767),
                                               (np.uint32, 4294967295)])
def test_normalize_other_integers_use_their_dtype_max(dtype, maxval):
    frame = frozen(np.array([[0, 3], [maxval, maxval // 2]], dtype=dtype))
    out = normalize(frame)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, (frame.astype(np.float64) / maxval).astype(np.float32))


def test_normalize_float_is_unchanged_float32_copy():
    frame = frozen(np.array([[-1.5, 0.25], [3.0, 1e-3]], dtype=np.float64))
    out = normalize(frame)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, frame.astype(np.float32))
    f32 = np.array([[1.0, 2.0]], dtype=np.float32)
    assert normalize(f32) is not f32


# -- flat field ------------------------------------------------------------------------------

def test_flat_is_mean_of_normalized_frames_by_hand():
    frames = [np.full((2, 3), v, dtype=np.uint16) for v in (0, 65535, 13107, 26214)]
    flat = flat_from_frames(iter(frames))
    assert flat.dtype == np.float32
    # (0 + 1 + 0.2 + 0.4) / 4 = 0.4
    np.testing.assert_allclose(flat, 0.4, rtol=1e-7)


def test_flat_equals_float64_mean_of_stack_exactly():
    frames = [frozen(RNG.integers(0, 65536, (17, 23), dtype=np.uint16)) for _ in range(20)]
    stack = np.stack([normalize(f) for f in frames])
    reference = stack.mean(axis=0, dtype=np.float64).astype(np.float32)
    np.testing.assert_array_equal(flat_from_frames(frames), reference)


def test_flat_rejects_no_frames_and_mixed_shapes():
    with pytest.raises(ValueError):
        flat_from_frames([])
    with pytest.raises(ValueError):
        flat_from_frames([np.zeros((2, 2)), np.zeros((2, 3))])


def test_flat_field_divides_and_floors_zeros_at_1e6():
    image = frozen(np.array([[0.5, 0.5], [2e-6, 0.0]], dtype=np.float32))
    flat = frozen(np.array([[0.25, 0.0], [0.0, -1.0]], dtype=np.float32))
    out = flat_field(image, flat)
    floor = np.float32(1e-6)
    expected = np.array([[2.0, np.float32(0.5) / floor], [np.float32(2e-6) / floor, 0.0]],
                        dtype=np.float32)
    np.testing.assert_array_equal(out, expected)
    assert np.isfinite(out).all()


# -- percentiles and linear stretch ---------------------------------------------------------

def test_percentiles_of_a_ramp_are_known():
    # 0 … 100000 shuffled: the p-th percentile of 0..N-1 is p/100 * (N-1).
    ramp = RNG.permutation(np.arange(100001, dtype=np.float32)).reshape(1, -1)
    assert percentiles(ramp) == (1000.0, 99000.0)
    small = np.arange(11, dtype=np.float32)  # below the fast path's size
    assert percentiles(small, (10, 55)) == (1.0, 5.5)


def test_percentiles_interpolate_linearly_between_order_statistics():
    values = RNG.permutation(np.arange(5000, dtype=np.float32) * 2)  # 0, 2, …, 9998
    lo, hi = percentiles(values, (1.0, 99.0))
    # position 0.01 * 4999 = 49.99 -> 98 + 0.99 * 2; 0.99 * 4999 = 4949.01 -> 9898 + 0.01 * 2
    assert lo == pytest.approx(99.98, rel=1e-12)
    assert hi == pytest.approx(9898.02, rel=1e-12)


@pytest.mark.parametrize("kind", ["uniform", "normal", "ties", "skewed", "outliers", "nan"])
@pytest.mark.parametrize("shape", [(7, 5), (300, 200), (1024, 1024)])
def test_percentiles_equal_numpy(kind, shape):
    if kind == "uniform":
        x = RNG.random(shape, dtype=np.float32)
    elif kind == "normal":
        x = RNG.normal(1.0, 0.2, shape).astype(np.float32)
    elif kind == "ties":
        x = RNG.integers(0, 4, shape).astype(np.float32)
    elif kind == "skewed":
        x = RNG.exponential(1.0, shape).astype(np.float32) ** 4
    elif kind == "outliers":
        x = np.ones(shape, dtype=np.float32)
        x.flat[:: max(1, x.size // 50)] = 1e6
    else:
        x = RNG.random(shape, dtype=np.float32)
        x.flat[3] = np.nan
    got = percentiles(frozen(x), (1, 99))
    np.testing.assert_allclose(got, np.percentile(x, [1, 99]), rtol=1e-6, equal_nan=True)


@settings(max_examples=60, deadline=None)
@given(st.integers(4096, 20000), st.integers(0, 2**32 - 1), st.integers(1, 20),
       st.floats(0, 100), st.floats(0, 100))
def test_percentiles_equal_numpy_property(n, seed, levels, q1, q2):
    x = np.random.default_rng(seed).integers(0, levels, n).astype(np.float32) * np.float32(0.37)
    np.testing.assert_allclose(percentiles(x, (q1, q2)), np.percentile(x, [q1, q2]), rtol=1e-6)


def test_stretch_of_a_ramp_by_hand():
    ramp = frozen(np.arange(101, dtype=np.float32).reshape(1, -1))  # lo = 1, hi = 99
    out = linear_stretch(ramp)
    expected = np.clip((np.arange(101) - 1.0) / 98.0, 0, 1)
    np.testing.assert_allclose(out[0], expected, atol=1e-7)
    assert out[0, 0] == 0.0 and out[0, 1] == 0.0 and out[0, 99] == 1.0 and out[0, 100] == 1.0


def test_stretch_all_zeros_when_hi_not_above_lo():
    constant = frozen(np.full((40, 40), 0.7, dtype=np.float32))
    assert not linear_stretch(constant).any()
    mostly = np.zeros((100, 100), dtype=np.float32)
    mostly.flat[:50] = 5.0  # 0.5 % outliers: both percentiles are 0
    out = linear_stretch(frozen(mostly))
    assert out.dtype == np.float32 and not out.any()


@pytest.mark.parametrize("offset, spread", [(0.0, 1.0), (1.0, 0.5), (1.0, 1e-4), (-3.0, 1e-3),
                                            (1000.0, 2.0)])
def test_stretch_equals_float64_formula(offset, spread):
    x = frozen((offset + spread * RNG.normal(0, 1, (256, 300))).astype(np.float32))
    lo, hi = np.percentile(x.astype(np.float64), [1, 99])
    expected = np.clip((x.astype(np.float64) - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(linear_stretch(x), expected, atol=1e-6, rtol=0)


# -- gaussian --------------------------------------------------------------------------------

SIGMAS = [0.05, 0.3, 1.0, 1.7, 4.0, 7.3]


@pytest.mark.parametrize("sigma", SIGMAS)
@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (1, 40), (40, 1), (9, 7), (64, 64), (200, 333)])
@pytest.mark.parametrize("backend", ["auto", "opencv", "scipy"])
def test_gaussian_equals_scipy(shape, sigma, backend):
    x = frozen(RNG.random(shape, dtype=np.float32))
    expected = ndimage.gaussian_filter(x, sigma, mode="reflect", truncate=4.0)
    out = gaussian(x, sigma=sigma, backend=backend)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=0)


def test_gaussian_default_sigma_is_4_and_large_values_still_match():
    x = frozen(RNG.random((120, 90), dtype=np.float32) * 60000)
    np.testing.assert_allclose(gaussian(x), ndimage.gaussian_filter(x, 4.0), atol=1e-5 * 60000)
    np.testing.assert_array_equal(gaussian(x, sigma=4.0, backend="auto"),
                                  gaussian(x, sigma=4.0, backend="scipy"))


def test_gaussian_of_a_constant_is_that_constant_and_sigma_must_be_positive():
    x = np.full((30, 17), 0.25, dtype=np.float32)
    np.testing.assert_allclose(gaussian(x, sigma=3.0), 0.25, atol=1e-7)
    for sigma in (0.0, 1e-300, 100.5, float("nan")):
        with pytest.raises(ValueError):
            gaussian(x, sigma=sigma)
    np.testing.assert_array_equal(gaussian(x, sigma=0.01), x)  # the smallest: kernel [1]


def test_gaussian_without_opencv_falls_back_to_scipy(monkeypatch):
    x = frozen(RNG.random((50, 40), dtype=np.float32))
    monkeypatch.setattr(pipeline, "_cv2", None)
    assert pipeline.gaussian_backend() == "scipy"
    expected = ndimage.gaussian_filter(x, 3.0)
    np.testing.assert_array_equal(gaussian(x, sigma=3.0), expected)
    np.testing.assert_array_equal(gaussian(x, sigma=3.0, backend="opencv"), expected)
    frame, flat = make_frame_and_flat()
    stages = process(frame, flat, 3.0)
    np.testing.assert_array_equal(stages.smoothed, ndimage.gaussian_filter(stages.stretched, 3.0))


def test_gaussian_kernel_matches_scipy_radius():
    for sigma in SIGMAS:
        kernel = pipeline.gaussian_kernel(sigma)
        assert kernel.size == 2 * int(4.0 * sigma + 0.5) + 1
        assert kernel.sum() == pytest.approx(1.0)


# -- process ---------------------------------------------------------------------------------

def make_frame_and_flat(shape=(64, 80), seed=3):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    beam = 20000 + 20000 * np.exp(-((yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2) / 900)
    flats = [(beam + rng.normal(0, 300, shape)).astype(np.uint16) for _ in range(20)]
    sample = 0.6 + 0.3 * np.sin(xx / 7.0) * np.cos(yy / 5.0)
    frame = (beam * sample + rng.normal(0, 300, shape)).clip(0, 65535).astype(np.uint16)
    return frozen(frame), frozen(flat_from_frames(flats))


def test_process_stages_compose_the_functions():
    frame, flat = make_frame_and_flat()
    stages = process(frame, flat, 2.5)
    assert isinstance(stages, Stages)
    assert [name for name, _ in stages.items()] == list(Stages.NAMES)
    np.testing.assert_array_equal(stages.original, frame)
    np.testing.assert_array_equal(stages.normalized, normalize(frame))
    np.testing.assert_array_equal(stages.flat_corrected, flat_field(normalize(frame), flat))
    np.testing.assert_array_equal(stages.stretched, linear_stretch(stages.flat_corrected))
    reference = ndimage.gaussian_filter(stages.stretched, 2.5)
    np.testing.assert_allclose(stages.smoothed, reference, atol=1e-5)
    for _, arr in stages.items()[1:]:
        assert arr.dtype == np.float32


def test_process_final_only_equals_smoothed_stage_and_reference_formula():
    frame, flat = make_frame_and_flat(seed=9)
    final = process(frame, flat, 4.0, all_stages=False)
    np.testing.assert_array_equal(final, process(frame, flat, 4.0).smoothed)
    # The whole pipeline written out in float64 numpy/scipy, as a scientist's reference would be.
    norm = frame.astype(np.float64) / 65535
    corrected = norm / np.maximum(flat.astype(np.float64), 1e-6)
    lo, hi = np.percentile(corrected, [1, 99])
    stretched = np.clip((corrected - lo) / (hi - lo), 0, 1)
    reference = ndimage.gaussian_filter(stretched, 4.0)
    np.testing.assert_allclose(final, reference, atol=1e-5)


def test_process_constant_frame_with_constant_flat_is_zero():
    frame = np.full((30, 30), 1000, dtype=np.uint16)
    flat = np.full((30, 30), 0.5, dtype=np.float32)
    stages = process(frame, flat, 1.0)
    np.testing.assert_allclose(stages.flat_corrected, 1000 / 65535 / 0.5, rtol=1e-6)
    assert not stages.stretched.any() and not stages.smoothed.any()


def test_workspace_reuses_buffers_and_matches_process():
    frame, flat = make_frame_and_flat(seed=4)
    other, _ = make_frame_and_flat(seed=5)
    work = Workspace(frame.shape, flat, 4.0)
    first = work.run(frame).copy()
    second = work.run(other)
    np.testing.assert_array_equal(first, process(frame, flat, 4.0, all_stages=False))
    np.testing.assert_array_equal(second, process(other, flat, 4.0, all_stages=False))
    with pytest.raises(ValueError):
        work.run(np.zeros((3, 3), dtype=np.uint16))


def test_process_rejects_bad_input():
    with pytest.raises(ValueError):
        process(np.zeros((2, 2, 2), dtype=np.uint16), np.ones((2, 2)), 1.0)
    with pytest.raises(ValueError):
        process(np.zeros((2, 2), dtype=np.uint16), np.ones((3, 2)), 1.0)
    with pytest.raises(ValueError):
        process(np.zeros((2, 2), dtype=np.uint16), np.ones((2, 2)), 0.0)


# -- 8-bit conversion ------------------------------------------------------------------------

def test_to_uint8_rounds_and_clips_by_hand():
    x = frozen(np.array([[-0.5, 0.0, 0.5 / 255, 1.5 / 255, 0.5, 1.0, 2.0, np.nan]],
                        dtype=np.float32))
    # 0.5 and 1.5 round half to even (numpy's round): 0 and 2; 127.5 -> 128
    np.testing.assert_array_equal(to_uint8(x), [[0, 0, 0, 2, 128, 255, 255, 0]])


def test_to_uint8_equals_the_formula():
    x = frozen(RNG.normal(0.5, 0.4, (300, 300)).astype(np.float32))
    np.testing.assert_array_equal(to_uint8(x), np.round(np.clip(x, 0, 1) * 255).astype(np.uint8))
