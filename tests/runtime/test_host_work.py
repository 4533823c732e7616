"""The device runtime's host work (tflite/runtime.py): the fast argmax, the banded resize and label paths, the
nearest-neighbour index maps, each equal to the straightforward computation. numpy and Pillow only."""

import numpy as np
import pytest
from PIL import Image

from tflite.runtime import (Segmenter, _Bands, _first_argmax, _pillow_nearest_index, _Resizer, _UpsampledArgmax,
                            default_host_threads, resize_bilinear)


def tied_scores(rng, shape, classes, dtype):
    """Scores drawn from few values, so that many pixels have two or more maximal classes."""
    values = rng.integers(0, 4, size=(*shape, classes))
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        values = values * 7 + (info.min if info.min < 0 else 0)  # negative int8 / int16 scores too
    return values.astype(dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.float32, np.float64])
@pytest.mark.parametrize("classes", [1, 2, 11, 300])
def test_first_argmax_equals_np_argmax(dtype, classes):
    rng = np.random.default_rng(classes)
    scores = tied_scores(rng, (7, 13), classes, dtype)
    expected = np.argmax(scores, axis=-1)
    assert classes == 1 or np.any(np.sort(scores, -1)[..., -1] == np.sort(scores, -1)[..., -2])  # ties present
    out_dtype = np.uint8 if classes <= 256 else np.int32
    out = np.full((7, 13), 99, out_dtype)
    assert _first_argmax(scores, out) is out
    np.testing.assert_array_equal(out, expected)
    channels_first = np.ascontiguousarray(np.moveaxis(scores, -1, 0))
    np.testing.assert_array_equal(_first_argmax(channels_first, np.empty((7, 13), out_dtype), axis0=True), expected)
    # A strided band of a larger map, as the banded callers pass.
    np.testing.assert_array_equal(_first_argmax(scores[2:5], np.empty((3, 13), out_dtype)), expected[2:5])


def test_bands_cover_the_range_once():
    bands = _Bands(3)
    for n, minimum in ((0, 16), (1, 16), (47, 16), (1000, 16), (5, 1)):
        pieces = bands.split(n, minimum)
        assert len(pieces) <= 3 and pieces[0][0] == 0 and pieces[-1][1] == n
        assert all(a < b or n == 0 for a, b in pieces) and all(p[1] == q[0] for p, q in zip(pieces, pieces[1:]))
    assert bands.run(lambda a, b: (a, b), 90) == [(0, 30), (30, 60), (60, 90)]
    assert _Bands(1).run(lambda a, b: (a, b), 90) == [(0, 90)]


@pytest.mark.parametrize("cores, expected", [(1, 1), (2, 2), (3, 3), (16, 4)])
def test_default_host_threads_are_the_usable_cores_up_to_four(monkeypatch, cores, expected):
    # The cores this process may run on (its affinity, e.g. a container's CPU set), not the machine's count.
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert default_host_threads() == expected


@pytest.mark.parametrize("src, dst", [((1080 // 8, 1920 // 8), (61, 131)), ((37, 53), (90, 33)), ((9, 11), (40, 30))])
def test_banded_resize_is_bit_identical(src, dst):
    rng = np.random.default_rng(30)
    for array in (rng.integers(0, 256, size=(*src, 3)).astype(np.uint8), rng.normal(size=(*src, 5)).astype(np.float32)):
        resizer = _Resizer(array.shape, dst)
        expected = resize_bilinear(array, dst)
        for threads in (1, 2, 3):
            np.testing.assert_array_equal(resizer(array, _Bands(threads)), expected)


@pytest.mark.parametrize("src, dst", [((5, 7), (13, 20)), ((64, 128), (135, 240)), ((17, 31), (17, 31)),
                                      ((40, 60), (23, 37)), ((1, 3), (9, 2))])
def test_pillow_nearest_index_reproduces_pillow(src, dst):
    labels = np.random.default_rng(31).integers(0, 11, size=src).astype(np.uint8)
    expected = np.asarray(Image.fromarray(labels).resize(dst[::-1], Image.NEAREST))
    rows, cols = _pillow_nearest_index(dst[0], src[0]), _pillow_nearest_index(dst[1], src[1])
    np.testing.assert_array_equal(labels[rows][:, cols], expected)


@pytest.mark.parametrize("rule", ["pillow", "tensorflow"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_banded_boundary_argmax_is_bit_identical(rule, dtype):
    # Random labels make nearly every output pixel a boundary one: thousands, split between the threads.
    rng = np.random.default_rng(32)
    raw = tied_scores(rng, (40, 60), 6, dtype)
    quantization = (np.float32(0.05), -3)
    upsample = _UpsampledArgmax((40, 60), (97, 143), rule, 6, quantization, np.uint8, raw.dtype)
    upsample.DENSE_SHARE = 1.0
    expected = upsample(raw, dense=None)
    if rule == "tensorflow":  # against the full resize (the Pillow rule is checked so in test_runtime.py)
        scores = (raw.astype(np.float32) - np.float32(-3)) * np.float32(0.05)
        np.testing.assert_array_equal(expected, np.argmax(resize_bilinear(scores, (97, 143)), -1))
    for threads in (2, 3):
        np.testing.assert_array_equal(upsample(raw, dense=None, bands=_Bands(threads)), expected)


def test_host_threads_is_checked(tmp_path):
    model = tmp_path / "model.tflite"
    model.write_bytes(b"not read before the arguments are checked")
    for bad in (0, -1, True, 2.0, "2"):
        with pytest.raises(ValueError, match="host_threads"):
            Segmenter(model, host_threads=bad)
