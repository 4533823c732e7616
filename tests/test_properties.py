"""Property-based tests (hypothesis) of the places where arbitrary input arrives: the device runtime's image
preprocessing, the metadata readers (sidecar / ``kerasseg.json`` and the runtime's check against the model) and the
label checks of the dataset pipeline. Every input either gives a clear ``ValueError`` or a correct result."""

import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

H, W, K = 8, 12, 3
# No example database on disk (the test folder stays clean); no deadline (a loaded CI machine is slow at times).
SETTINGS = dict(database=None, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def segmenters(tmp_path_factory):
    """The device runtime on a tiny model exported as fp32 and as int8."""
    import keras

    from kerasseg.export import to_tflite
    from kerasseg.preprocessing import ModelMetadata
    from tflite.runtime import Segmenter

    keras.utils.set_random_seed(0)
    inputs = keras.Input((H, W, 3), name="image")
    model = keras.Model(inputs, keras.layers.Conv2D(K, 1, name="logits")(inputs), name="tiny_property_net")
    model.kerasseg_metadata = ModelMetadata.for_model(model, "tiny_property_net")
    folder = tmp_path_factory.mktemp("properties")
    calibration = np.random.default_rng(0).normal(size=(4, H, W, 3)).astype(np.float32)
    out = {}
    for mode in ("fp32", "int8"):
        path = to_tflite(model, folder / f"{mode}.tflite", mode, representative_data=calibration,
                         num_calibration_samples=4, verbose=False)
        out[mode] = Segmenter(path, num_threads=1)
    return out


ARRAYS = hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.int8, np.uint16, np.int32, np.float32, np.float64, np.bool_]),
    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=24))


@settings(max_examples=80, **SETTINGS)
@given(image=ARRAYS, mode=st.sampled_from(["fp32", "int8"]))
def test_runtime_preprocess_accepts_pixels_and_refuses_the_rest_clearly(segmenters, image, mode):
    seg = segmenters[mode]
    valid = image.dtype == np.uint8 and (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (3, 4))) and \
        image.ndim >= 2 and min(image.shape[:2]) >= 1
    if not valid:
        with pytest.raises(ValueError, match=r"Expected image"):
            seg.preprocess(image)
        return
    x = seg.preprocess(image)
    assert x.shape == (1, H, W, 3) and x.dtype == seg.input_dtype
    if mode == "fp32":
        assert np.all(np.isfinite(x))
        # Pixel-input files (the default export) take the frame's values; normalised-input ones normalise them.
        pixels = seg.input_format == "pixels"
        if image.shape[:2] == (H, W) and image.ndim == 3:
            expected = image[..., :3].astype(np.float32)
            np.testing.assert_array_equal(x[0], expected if pixels else (expected - seg.mean) / seg.std)
        lo, hi = (0.0, 255.0) if pixels else ((0 - seg.mean) / seg.std, (255 - seg.mean) / seg.std)
        assert np.all(x[0] >= lo - 1e-5) and np.all(x[0] <= hi + 1e-5)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-300, 300) | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)


def _valid_metadata():
    return {"model_name": "net", "num_classes": K, "input_shape": [H, W, 3], "normalization": "imagenet",
            "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375], "class_names": ["a", "b", "c"],
            "palette": [[1, 2, 3], [4, 5, 6], [7, 8, 9]], "ignore_label": 255, "extra": {}}


@settings(max_examples=120, **SETTINGS)
@given(key=st.sampled_from(sorted(_valid_metadata()) + ["unknown", None]), value=JSON)
def test_metadata_reader_returns_valid_metadata_or_a_value_error(key, value):
    from kerasseg.preprocessing import ModelMetadata

    d = _valid_metadata() if key is not None else value
    if key is not None:
        d[key] = value
    try:
        meta = ModelMetadata.from_json(json.dumps(d))
    except ValueError as e:
        assert str(e).startswith(("Expected", "Unknown metadata keys"))
        return
    # Accepted: every value is usable, and it survives a write / read round trip unchanged.
    assert isinstance(meta.num_classes, int) and meta.num_classes >= 1
    assert np.all(np.isfinite(meta.mean)) and np.all(np.asarray(meta.std) > 0)
    assert meta.class_names is None or len(meta.class_names) == meta.num_classes
    assert ModelMetadata.from_json(meta.to_json()) == meta


@settings(max_examples=150, **SETTINGS)
@given(key=st.sampled_from(sorted(_valid_metadata()) + ["extra.export.output", "extra.export.mode",
                                                        "extra.export.input_dtype", "extra.export.host_upsample"]),
       value=JSON)
def test_runtime_metadata_check_accepts_only_what_fits_the_model(key, value):
    from tflite.runtime import check_metadata

    inp = {"shape": np.array([1, H, W, 3]), "dtype": np.float32, "quantization": (0.0, 0)}
    out = {"shape": np.array([1, H, W, K]), "dtype": np.float32, "quantization": (0.0, 0)}
    meta = _valid_metadata()
    target = meta
    *parents, last = key.split(".")
    for p in parents:
        target = target.setdefault(p, {})
    target[last] = value
    try:
        checked = check_metadata(meta, inp, out, source="s.json")
    except ValueError as e:
        assert str(e).startswith("Expected") and "in s.json" in str(e)
        return
    assert checked["num_classes"] == K and checked["output"] in ("logits", "probabilities")
    assert checked["host_upsample"] is None or all(d > 0 for d in checked["host_upsample"])


@settings(max_examples=6, **SETTINGS)
@given(num_classes=st.integers(1, 6),
       stored=hnp.arrays(np.uint8, (4, 5), elements=st.sampled_from([0, 1, 2, 3, 4, 5, 6, 9, 200, 254, 255])))
def test_label_check_fails_exactly_on_values_outside_the_classes(tmp_path_factory, num_classes, stored):
    import tensorflow as tf

    from kerasseg.data import ClassInfo, make_dataset
    from tests import dataset_fixtures as fx

    folder = tmp_path_factory.mktemp("labels")
    image, mask = str(folder / "image.png"), str(folder / "mask.png")
    fx.save_rgb(image, fx.image(0, 4, 5))
    fx.save_index(mask, stored)
    classes = ClassInfo(tuple(f"c{i}" for i in range(num_classes)), None, 255)
    invalid = ~np.isin(stored, list(range(num_classes)) + [255])
    dataset = make_dataset([(image, mask)], classes, batch_size=1, normalization="unit")
    if invalid.any():
        with pytest.raises(tf.errors.InvalidArgumentError, match=f"Received other values in.*{os.path.basename(mask)}"):
            list(dataset)
    else:
        (_, labels), = list(dataset)
        np.testing.assert_array_equal(labels.numpy()[0], stored)
    (_, quiet), = list(make_dataset([(image, mask)], classes, batch_size=1, label_check="off"))
    np.testing.assert_array_equal(quiet.numpy()[0], np.where(invalid, 255, stored))
