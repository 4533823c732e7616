"""The shipped ImageNet-initialised CamVid models: files, metadata, a fully integer int8 file that agrees with Keras."""

import os

import numpy as np
import pytest

import kerasseg
from kerasseg.data import camvid

# name: registry architecture of each shipped EfficientNet-Lite0 model.
MODELS = {"lraspp_lite0_camvid": "lraspp", "deeplabv3plus_lite0_camvid": "deeplabv3plus"}
from tests.paths import ROOT  # noqa: E402
CAMVID = os.path.join(ROOT, "..", "shared", "camvid")


@pytest.fixture(scope="module", params=sorted(MODELS))
def name(request):
    return request.param


@pytest.fixture(scope="module")
def model(name):
    return kerasseg.pretrained(name)


def test_camvid_models_are_listed():
    assert kerasseg.list_pretrained("*camvid") == sorted(["erfnet_camvid", *MODELS])


def test_files_fit_the_budget_and_the_int8_file_is_fully_integer(name):
    from kerasseg.export.compat import check

    files = kerasseg.pretrained_files(name)
    assert set(files) == {"keras", "tflite_int8", "sidecar"}
    total = sum(os.path.getsize(p) for p in files.values())
    assert total < 12 * 10 ** 6, f"pretrained {name} files take {total} bytes"
    # The pre-check's rules here; the real toolchains judge every shipped file in test_pretrained.py.
    for target in ("npu", "gpu"):
        report = check(files["tflite_int8"], target, toolchain=False)
        assert report.is_integer and report.ok, report.summary()


def test_model_metadata_and_record(name, model):
    assert tuple(model.inputs[0].shape) == (None, 368, 480, 3)
    assert tuple(model.outputs[0].shape) == (None, 368, 480, 11)
    meta = model.kerasseg_metadata
    assert meta.model_name == MODELS[name] and meta.normalization == "symmetric"
    assert meta.class_names == list(camvid.CLASS_NAMES) and meta.ignore_label == 255
    record = meta.extra["pretrained"]
    # The figures the README quotes come from this record; int8 within half a point of float.
    assert record["val_images"] == 101 and record["int8_miou_drop"] <= 0.5
    assert "data_dir" not in meta.extra["training"]


@pytest.mark.skipif(not os.path.isdir(CAMVID), reason="needs the CamVid validation frames next to the checkout")
def test_int8_file_on_the_device_runtime_segments_real_frames(name, model):
    import tensorflow as tf
    from PIL import Image

    from tflite.runtime import Segmenter

    seg = Segmenter(kerasseg.pretrained_files(name)["tflite_int8"], num_threads=2)
    assert seg.input_size == (368, 480) and list(seg.class_names) == list(camvid.CLASS_NAMES)
    meta = model.kerasseg_metadata
    mean, std = np.asarray(meta.mean, np.float32), np.asarray(meta.std, np.float32)
    for image_path, label_path in camvid.list_pairs(CAMVID, "val")[:2]:
        image = np.asarray(Image.open(image_path).convert("RGB"))
        labels = camvid.lookup()[np.asarray(Image.open(label_path))]
        device = seg.predict(image)
        assert device.shape == image.shape[:2]
        valid = labels != 255
        assert (device[valid] == labels[valid]).mean() > 0.8
        # The same 368x480 pixels through both. The int8 files come from quantisation-aware fine-tunes that went on
        # training, so they agree on most pixels, not all (95.7 % over the 101 validation frames for LR-ASPP,
        # docs/pretrained.md). A wrong preprocessing or channel order would not come close.
        resized = np.asarray(Image.fromarray(image).resize((480, 368), Image.BILINEAR))
        keras_labels = np.argmax(model(tf.constant(((resized - mean) / std)[None], tf.float32)).numpy()[0], -1)
        assert (seg.predict(resized) == keras_labels).mean() > 0.9


def test_float16_weight_storage_halves_the_file_and_loads_as_float32(tmp_path):
    import keras

    model = kerasseg.build_model("lraspp", 3, (32, 32, 3), backbone="mobilenetv2")
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=w.shape).astype(w.dtype) for w in model.get_weights()])
    kerasseg.save_model(model, tmp_path / "f32.keras")
    kerasseg.save_model(model, tmp_path / "f16.keras", weights_dtype="float16")
    assert os.path.getsize(tmp_path / "f16.keras") < 0.6 * os.path.getsize(tmp_path / "f32.keras")
    loaded = kerasseg.load_model(tmp_path / "f16.keras")
    assert {w.dtype for w in loaded.weights} == {"float32"}
    assert loaded.kerasseg_metadata.model_name == "lraspp"
    for ours, ref in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(ours, ref.astype(np.float16).astype(np.float32))
    with pytest.raises(ValueError, match=r"Expected weights_dtype to be one of .*Received: weights_dtype='int8'"):
        kerasseg.save_model(model, tmp_path / "x.keras", weights_dtype="int8")
    assert not os.path.exists(tmp_path / "x.keras")
    keras.backend.clear_session()
