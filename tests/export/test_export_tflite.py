"""TFLite export: fp32 parity, int8 agreement on a trained model, fp16 / dynamic, heads, sidecar, errors, CLI."""

import json
import os

import numpy as np
import pytest

import keras
import tensorflow as tf

import kerasseg
from kerasseg.evaluation import scores_from_confusion
from kerasseg.evaluation.compare import compare_keras_tflite
from kerasseg.export import (
    AccuracyDropError,
    TFLiteModel,
    custom_ops,
    export_verified,
    float_tensors,
    io_details,
    read_sidecar,
    tflite_ops,
    to_tflite,
)
from kerasseg.preprocessing import ModelMetadata, normalize_np
from tests.plain_conversion import plain_conversion

H, W = 32, 64
NUM_CLASSES = 3
MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
# Background blue, class 1 red and class 2 green rectangles on a 4-pixel grid, with colour noise: learnable in a
# few dozen steps.
RECT_COLORS = np.array([[40, 40, 200], [220, 30, 30], [30, 200, 40]], np.float32)
# Operators that edge delegates reject and that a static batch-1 export must not produce for ERFNet.
EDGE_HOSTILE_OPS = {"SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND", "SHAPE", "STRIDED_SLICE"}


def rectangles(n, seed, grid=4):
    """``n`` pixel-unit RGB images (n, H, W, 3) of noisy coloured rectangles and their int32 label maps."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, H, W, 3), np.float32)
    labels = np.zeros((n, H, W), np.int32)
    for i in range(n):
        lab = np.zeros((H, W), np.int32)
        for c in (1, 2):
            for _ in range(rng.integers(1, 3)):
                h, w = rng.integers(2, 5) * grid, rng.integers(2, 7) * grid
                y0, x0 = rng.integers(0, (H - h) // grid + 1) * grid, rng.integers(0, (W - w) // grid + 1) * grid
                lab[y0:y0 + h, x0:x0 + w] = c
        images[i] = np.clip(RECT_COLORS[lab] + rng.normal(0, 20, (H, W, 3)), 0, 255)
        labels[i] = lab
    return images, labels


@pytest.fixture(scope="module")
def random_model():
    keras.utils.set_random_seed(1)
    return kerasseg.build_model("erfnet", 4, input_shape=(H, W, 3))


@pytest.fixture(scope="module")
def trained():
    """ERFNet trained briefly on the rectangle task, with normalised train / val arrays."""
    keras.utils.set_random_seed(0)
    model = kerasseg.build_model("erfnet", NUM_CLASSES, input_shape=(H, W, 3), dropout=0.0, early_dropout=0.0)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), jit_compile=False,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x_train, y_train = rectangles(64, 0)
    x_val, y_val = rectangles(12, 1)
    x_train, x_val = normalize_np(x_train, MEAN, STD), normalize_np(x_val, MEAN, STD)
    model.fit(x_train, y_train, batch_size=4, epochs=10, verbose=0)
    # A few dozen steps leave the BN moving averages far from the data; set them to the training-set statistics
    # (momentum 0: one pass replaces them) so that inference mode is as accurate as training mode.
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0
    model(x_train, training=True)
    for layer in norms:
        layer.momentum = 0.99
    accuracy = float(np.mean(np.argmax(model.predict(x_val, verbose=0), -1) == y_val))
    assert accuracy > 0.9, f"the rectangle task did not train (val pixel accuracy {accuracy:.3f})"
    return {"model": model, "x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val}


def keras_logits(model, x):
    return model(x, training=False).numpy()


def test_fp32_matches_keras_and_has_edge_friendly_ops(random_model, tmp_path):
    # The test is only meaningful if the model really has dilated and transposed convolutions.
    dilations = {layer.dilation_rate for layer in random_model.layers if isinstance(layer, keras.layers.Conv2D)}
    assert any(max(d) > 1 for d in dilations)
    assert any(isinstance(layer, keras.layers.Conv2DTranspose) for layer in random_model.layers)

    path = to_tflite(random_model, tmp_path / "m.tflite")
    assert path == str(tmp_path / "m.tflite")
    x = np.random.default_rng(0).normal(size=(3, H, W, 3)).astype(np.float32)
    lite = TFLiteModel(path, num_threads=2)
    assert lite.input_shape == (H, W, 3) and lite.head == "scores"
    diff = np.max(np.abs(lite(x) - keras_logits(random_model, x)))
    assert diff < 1e-4, diff
    ops = tflite_ops(path)
    assert ops["CONV_2D"] > 0 and ops["TRANSPOSE_CONV"] == 3
    assert not EDGE_HOSTILE_OPS & set(ops), ops
    assert custom_ops(path) == []
    assert tflite_ops(open(path, "rb").read()) == ops
    details = io_details(path)
    assert details["input_shape"] == [1, H, W, 3] and details["output_shape"] == [1, H, W, 4]
    assert details["input_quantization"] is None and details["input_dtype"] == "float32"


@pytest.mark.slow
def test_int8_full_integer_agrees_with_keras(trained, tmp_path, capsys):
    model = trained["model"]
    # (image, label) batches from tf.data, as the data loader yields them.
    calibration = tf.data.Dataset.from_tensor_slices((trained["x_train"], trained["y_train"])).batch(4)
    path = to_tflite(model, tmp_path / "m_int8.tflite", "int8", representative_data=calibration,
                     num_calibration_samples=24)
    assert "calibrating 24/24" in capsys.readouterr().err
    details = io_details(path)
    # The default int8 contract: camera pixels in (uint8, scale 1, zero point 0), quantised scores out.
    assert details["input_dtype"] == "uint8" and details["output_dtype"] == "uint8"
    assert details["input_quantization"] == [1.0, 0] and details["output_quantization"] is not None
    assert float_tensors(path) == []
    ops = tflite_ops(path)
    assert custom_ops(path) == [] and not EDGE_HOSTILE_OPS & set(ops)

    lite = TFLiteModel(path)
    x_val, y_val = trained["x_val"], trained["y_val"]
    agreement = np.mean(lite.predict_labels(x_val) == np.argmax(keras_logits(model, x_val), -1))
    assert agreement >= 0.95, agreement

    report = compare_keras_tflite(model, path, zip(x_val, y_val), NUM_CLASSES, 255, per_image=True)
    assert report["num_images"] == len(x_val)
    for runtime in ("keras", "tflite"):
        per_image = report[f"{runtime}_confusions"]
        assert per_image.shape == (len(x_val), NUM_CLASSES, NUM_CLASSES)
        assert scores_from_confusion(per_image.sum(axis=0))["miou"] == pytest.approx(report[f"{runtime}_miou"])
    assert report["pixel_agreement"] == pytest.approx(agreement)
    assert report["keras_miou"] > 0.7
    assert abs(report["miou_drop"]) < 5.0
    assert 0 < report["max_abs_logit_error"] < 5.0
    sidecar = read_sidecar(path).extra["export"]
    assert sidecar["mode"] == "int8" and sidecar["input_dtype"] == "uint8" and sidecar["input_format"] == "pixels"
    assert sidecar["input_quantization"] == pytest.approx(list(details["input_quantization"]))


@pytest.mark.slow
@pytest.mark.parametrize("mode, min_agreement, max_size_ratio", [("fp16", 0.99, 0.6), ("dynamic", 0.95, 0.35)])
def test_fp16_and_dynamic_convert_and_run(trained, tmp_path, mode, min_agreement, max_size_ratio):
    model = trained["model"]
    fp32 = to_tflite(model, tmp_path / "fp32.tflite")
    path = to_tflite(model, tmp_path / f"{mode}.tflite", mode)
    # Smaller files show the weights really were stored in float16 / int8.
    assert os.path.getsize(path) < max_size_ratio * os.path.getsize(fp32)
    assert io_details(path)["input_dtype"] == "float32" and custom_ops(path) == []
    x_val = trained["x_val"]
    out = TFLiteModel(path)(x_val)
    assert out.shape == (len(x_val), H, W, NUM_CLASSES) and np.all(np.isfinite(out))
    agreement = np.mean(np.argmax(out, -1) == np.argmax(keras_logits(model, x_val), -1))
    assert agreement >= min_agreement, agreement


def test_probability_and_label_heads(random_model, tmp_path):
    x = np.random.default_rng(2).normal(size=(2, H, W, 3)).astype(np.float32)
    logits = keras_logits(random_model, x)
    probs = TFLiteModel(to_tflite(random_model, tmp_path / "p.tflite", output="probabilities"))(x)
    np.testing.assert_allclose(probs, tf.nn.softmax(logits).numpy(), atol=1e-5)

    labels_path = to_tflite(random_model, tmp_path / "l.tflite", output="labels")
    assert tflite_ops(labels_path)["ARG_MAX"] == 1
    lite = TFLiteModel(labels_path)
    assert lite.head == "labels"
    labels = lite(x)
    assert labels.dtype == np.int32 and labels.shape == (2, H, W)
    assert np.mean(labels == np.argmax(logits, -1)) > 0.999
    assert read_sidecar(labels_path).extra["export"]["output"] == "labels"


def test_int8_label_head_with_uint8_input(random_model, tmp_path):
    calibration = np.random.default_rng(3).normal(size=(6, H, W, 3)).astype(np.float32)
    path = to_tflite(random_model, tmp_path / "u8.tflite", "int8", representative_data=calibration,
                     num_calibration_samples=6, output="labels", io_dtype="uint8", verbose=False)
    details = io_details(path)
    assert details["input_dtype"] == "uint8" and details["output_dtype"] == "int32"
    assert details["output_quantization"] is None
    assert float_tensors(path) == []
    out = TFLiteModel(path).predict_labels(calibration[:2])
    assert out.shape == (2, H, W) and out.min() >= 0 and out.max() < 4


def test_calibration_resizes_and_accepts_single_images(random_model, tmp_path, capsys):
    # Unbatched images of another size than the model input: resized, counted one by one.
    images = [np.random.default_rng(i).normal(size=(48, 80, 3)).astype(np.float32) for i in range(5)]
    to_tflite(random_model, tmp_path / "r.tflite", "int8", representative_data=images, num_calibration_samples=3)
    err = capsys.readouterr().err
    assert "calibrating 3/3" in err and "calibrating 4/" not in err
    to_tflite(random_model, tmp_path / "short.tflite", "int8", representative_data=images, num_calibration_samples=9)
    assert "calibrated on 5 images only" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["int", "INT8", "float32", "fp", "", None])
def test_unknown_mode_is_an_error(random_model, tmp_path, mode):
    with pytest.raises(ValueError,
                       match=r"Expected mode to be one of \['fp32', 'fp16', 'dynamic', 'int8', 'int16x8'\]"):
        to_tflite(random_model, tmp_path / "m.tflite", mode)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("kwargs, match", [
    ({"output": "argmax"}, "Expected output to be one of"),
    ({"io_dtype": "int16"}, "Expected io_dtype to be one of"),
    ({"mode": "int8"}, "Expected representative_data"),
    ({"mode": "int8", "representative_data": []}, "at least one image"),
    ({"mode": "int8", "representative_data": np.zeros((2, H, W, 3), np.uint8)}, "normalised float images"),
    ({"mode": "int8", "representative_data": np.zeros((2, H, W, 4), np.float32)}, r"\(H, W, 3\)"),
    ({"mode": "int8", "representative_data": np.zeros((2, H, W, 3), np.float32), "num_calibration_samples": 0},
     "num_calibration_samples"),
])
def test_bad_arguments_are_errors_and_write_nothing(random_model, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        to_tflite(random_model, tmp_path / "m.tflite", verbose=False, **kwargs)
    assert os.listdir(tmp_path) == []


def test_path_must_be_tflite(random_model, tmp_path):
    with pytest.raises(ValueError, match=r"ending in '.tflite'. Received: path="):
        to_tflite(random_model, tmp_path / "m.json")
    assert os.listdir(tmp_path) == []


def test_failing_conversion_leaves_previous_files_untouched(random_model, tmp_path):
    target = tmp_path / "m.tflite"
    target.write_bytes(b"previous model")
    (tmp_path / "m.json").write_text("previous sidecar")

    def exploding():
        yield np.zeros((H, W, 3), np.float32)
        yield np.zeros((H, W, 3), np.float32)
        raise RuntimeError("camera unplugged")

    with pytest.raises(RuntimeError, match="camera unplugged"):
        to_tflite(random_model, target, "int8", representative_data=exploding(), verbose=False)
    assert target.read_bytes() == b"previous model"
    assert (tmp_path / "m.json").read_text() == "previous sidecar"
    assert sorted(os.listdir(tmp_path)) == ["m.json", "m.tflite"]


def test_non_builtin_operators_are_refused(tmp_path):
    class StringLength(keras.layers.Layer):
        # tf.strings ops have no TFLite builtin: they would need the Flex delegate.
        def call(self, x):
            n = tf.strings.length(tf.strings.as_string(tf.reduce_sum(x)))
            return x + tf.cast(n, x.dtype)

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, StringLength()(keras.layers.Conv2D(2, 1)(inputs)))
    with pytest.raises(ValueError, match="builtin operators"):
        to_tflite(model, tmp_path / "flex.tflite")
    assert os.listdir(tmp_path) == []

    # The detector itself, on a model converted with the Flex delegate allowed.
    flex = plain_conversion(model, flex=True)
    assert custom_ops(flex) == ["FlexAsString", "FlexStringLength"]
    assert tflite_ops(flex)["FlexAsString"] == 1


def test_sidecar_content(random_model, tmp_path):
    metadata = random_model.kerasseg_metadata.with_dataset(class_names=["a", "b", "c", "d"],
                                                           palette=[[1, 2, 3], [4, 5, 6], [7, 8, 9], [9, 9, 9]])
    metadata.extra["training"] = {"epochs": 3}
    path = to_tflite(random_model, tmp_path / "m.tflite", metadata=metadata)
    with open(tmp_path / "m.json") as f:
        raw = json.load(f)
    meta = ModelMetadata.from_dict(raw)
    assert meta.class_names == ["a", "b", "c", "d"] and meta.palette[1] == [4, 5, 6]
    assert meta.input_shape == [H, W, 3] and meta.num_classes == 4 and meta.model_name == "erfnet"
    assert meta.mean == list(MEAN) and meta.std == list(STD)
    assert meta.extra["training"] == {"epochs": 3}
    assert meta.extra["export"] == {
        "format": "tflite", "mode": "fp32", "output": "logits", "input_format": "pixels", "input_dtype": "float32",
        "output_dtype": "float32", "input_shape": [1, H, W, 3], "output_shape": [1, H, W, 4],
        "input_quantization": None, "output_quantization": None, "host_upsample": None, "target": None}
    # The export record goes to the file, not into the caller's objects.
    assert "export" not in metadata.extra and "export" not in random_model.kerasseg_metadata.extra
    assert read_sidecar(path) == meta


def test_sidecar_defaults_for_a_plain_keras_model(tmp_path):
    inputs = keras.Input((16, 16, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(5, 3, padding="same")(inputs), name="plain")
    to_tflite(model, tmp_path / "plain.tflite")
    meta = read_sidecar(tmp_path / "plain.json")
    assert (meta.model_name, meta.num_classes, meta.input_shape) == ("plain", 5, [16, 16, 3])
    assert meta.normalization == "imagenet" and meta.mean == list(MEAN)


def test_dynamic_spatial_input_is_refused(tmp_path):
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs))
    with pytest.raises(ValueError, match="static"):
        to_tflite(model, tmp_path / "m.tflite")


def test_inspection_rejects_non_tflite_input(tmp_path):
    bogus = tmp_path / "bogus.tflite"
    bogus.write_bytes(b"definitely not a flatbuffer")
    with pytest.raises(ValueError, match="TFL3"):
        tflite_ops(bogus)
    with pytest.raises(FileNotFoundError, match="missing.tflite"):
        TFLiteModel(tmp_path / "missing.tflite")


def test_tflite_model_checks_input_shape(random_model, tmp_path):
    lite = TFLiteModel(to_tflite(random_model, tmp_path / "m.tflite"))
    assert lite(np.zeros((H, W, 3), np.float32)).shape == (H, W, 4)
    with pytest.raises(ValueError, match=r"Expected images of shape \(B, 32, 64, 3\)"):
        lite(np.zeros((1, W, H, 3), np.float32))


def test_export_verified_accepts_refuses_and_forces(random_model, tmp_path):
    rng = np.random.default_rng(4)
    images = rng.normal(size=(3, H, W, 3)).astype(np.float32)
    labels = rng.integers(0, 4, size=(3, H, W)).astype(np.int32)
    labels[:, :4] = 255  # ignored band
    data = list(zip(images, labels))
    target = tmp_path / "out" / "m.tflite"

    report = export_verified(random_model, target, "fp32", data=data, max_miou_drop=0.1)
    assert report["accepted"] and not report["forced"] and report["num_images"] == 3
    assert report["pixel_agreement"] > 0.999 and report["max_abs_logit_error"] < 1e-4
    assert abs(report["miou_drop"]) < 0.1
    evaluation = read_sidecar(target).extra["export"]["evaluation"]
    assert evaluation["keras_miou"] == pytest.approx(report["keras_miou"])
    assert sorted(os.listdir(target.parent)) == ["m.json", "m.tflite"]

    # An impossible bound (TFLite must beat Keras by 100 points) is refused and writes nothing.
    refused = tmp_path / "refused" / "m.tflite"
    with pytest.raises(AccuracyDropError, match="was not written") as info:
        export_verified(random_model, refused, "fp32", data=data, max_miou_drop=-100)
    assert info.value.report["accepted"] is False and info.value.report["tflite_bytes"] > 0
    assert os.listdir(refused.parent) == []

    forced = export_verified(random_model, refused, "fp32", data=data, max_miou_drop=-100, force=True)
    assert forced["forced"] and not forced["accepted"]
    assert read_sidecar(refused).extra["export"]["evaluation"]["forced"] is True
    assert sorted(os.listdir(refused.parent)) == ["m.json", "m.tflite"]


def test_compare_resizes_images_of_another_size(random_model, tmp_path):
    path = to_tflite(random_model, tmp_path / "m.tflite", output="labels")
    rng = np.random.default_rng(5)
    data = [(rng.normal(size=(1, 48, 96, 3)).astype(np.float32), rng.integers(0, 4, size=(1, 48, 96)))
            for _ in range(2)]
    report = compare_keras_tflite(random_model, path, data, 4, 255, max_images=1)
    assert report["num_images"] == 1 and report["output_head"] == "labels"
    assert report["max_abs_logit_error"] is None
    assert report["pixel_agreement"] > 0.99


def _write_folder_dataset(root):
    from PIL import Image

    from kerasseg.data.folder import ClassInfo, write_classes

    write_classes(str(root), ClassInfo(names=("background", "red", "green"),
                                       colors=((40, 40, 200), (220, 30, 30), (30, 200, 40)), ignore_label=255))
    for split, seed, n in (("train", 0, 6), ("val", 1, 3)):
        images, labels = rectangles(n, seed)
        os.makedirs(root / "images" / split)
        os.makedirs(root / "masks" / split)
        for i in range(n):
            Image.fromarray(images[i].astype(np.uint8)).save(root / "images" / split / f"{i:03d}.png")
            Image.fromarray(labels[i].astype(np.uint8)).save(root / "masks" / split / f"{i:03d}.png")


def test_export_cli(tmp_path, capsys):
    from kerasseg.cli import export_tflite

    keras.utils.set_random_seed(2)
    model = kerasseg.build_model("erfnet", NUM_CLASSES, input_shape=(H, W, 3))
    model_path = kerasseg.save_model(model, str(tmp_path / "model.keras"))
    data = tmp_path / "data"
    _write_folder_dataset(data)

    out = tmp_path / "export" / "m.tflite"
    argv = [model_path, "--mode", "fp32", "--dataset", "folder", "--data-dir", str(data), "--output", str(out),
            "--max-miou-drop", "0.5"]
    assert export_tflite.main(argv) == 0
    printed = capsys.readouterr().out
    assert "Keras mIoU" in printed and "TFLite mIoU" in printed and "pixel agreement" in printed
    assert "wrote" in printed
    meta = read_sidecar(out)
    assert meta.class_names == ["background", "red", "green"]
    assert meta.extra["export"]["evaluation"]["num_images"] == 3

    # Random weights quantise badly against an impossible bound: refused, nothing written, exit status 1.
    refused = tmp_path / "export" / "refused.tflite"
    argv = [model_path, "--mode", "int8", "--dataset", "folder", "--data-dir", str(data), "--output", str(refused),
            "--num-calibration", "4", "--max-miou-drop", "-100"]
    assert export_tflite.main(argv) == 1
    captured = capsys.readouterr()
    assert "refused" in captured.err and "was not written" in captured.err
    assert sorted(os.listdir(tmp_path / "export")) == ["m.json", "m.tflite"]

    # A float model for an NPU: refused by the target's check even with --allow-cpu-fallback, nothing written.
    argv = [model_path, "--mode", "fp32", "--dataset", "folder", "--data-dir", str(data), "--output", str(refused),
            "--target", "npu", "--allow-cpu-fallback"]
    assert export_tflite.main(argv) == 1
    captured = capsys.readouterr()
    assert "float tensor" in captured.err and "was not written" in captured.err
    assert sorted(os.listdir(tmp_path / "export")) == ["m.json", "m.tflite"]

    with pytest.raises(SystemExit):
        export_tflite.main([model_path, "--mode", "int4", "--output", str(out)])


# --- the label head as a Keras layer ------------------------------------------------------------------------------

def test_label_head_model_round_trips_in_safe_mode(random_model, tmp_path):
    from kerasseg.export import with_head
    from kerasseg.layers import ArgMax

    head = with_head(random_model, "labels", label_dtype="uint8")
    assert isinstance(head.layers[-1], ArgMax) and head.output.dtype == "uint8"
    assert head.kerasseg_metadata is random_model.kerasseg_metadata
    x = np.random.default_rng(6).normal(size=(2, H, W, 3)).astype(np.float32)
    labels = head(x).numpy()
    np.testing.assert_array_equal(labels, np.argmax(keras_logits(random_model, x), -1).astype(np.uint8))
    path = kerasseg.save_model(head, str(tmp_path / "labels.keras"))
    loaded = kerasseg.load_model(path, safe_mode=True)
    assert isinstance(loaded.layers[-1], ArgMax) and loaded.layers[-1].get_config()["output_dtype"] == "uint8"
    np.testing.assert_array_equal(loaded(x).numpy(), labels)
    # The reloaded head exports as it is (no second argmax): builtin ARG_MAX and a CAST to uint8.
    lite = TFLiteModel(to_tflite(loaded, tmp_path / "labels.tflite", output="labels", label_dtype="uint8"))
    ops = tflite_ops(tmp_path / "labels.tflite")
    assert ops["ARG_MAX"] == 1 and ops["CAST"] == 1 and custom_ops(tmp_path / "labels.tflite") == []
    assert lite.head == "labels" and np.mean(lite(x) == labels) > 0.999
    with pytest.raises(ValueError, match="already ends in an ArgMax label head"):
        to_tflite(loaded, tmp_path / "logits.tflite")
    assert with_head(random_model, "logits") is random_model
    probs = with_head(random_model, "probabilities")
    np.testing.assert_allclose(probs(x).numpy().sum(-1), 1.0, atol=1e-5)


def test_argmax_layer_validates_and_has_a_tf_keras_twin():
    import tf_keras

    from kerasseg.layers import ArgMax
    from kerasseg.layers.argmax import argmax_class

    with pytest.raises(ValueError, match=r"Expected output_dtype to be one of \['int32', 'uint8'\]"):
        ArgMax(output_dtype="int64")
    with pytest.raises(ValueError, match="Expected axis to be an integer"):
        ArgMax(axis=1.5)
    layer = ArgMax(axis=-1, output_dtype="int32", name="am")
    assert layer.compute_output_shape((None, 4, 5, 3)) == (None, 4, 5)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(clone, ArgMax) and clone.get_config()["output_dtype"] == "int32" and clone.name == "am"

    twin = argmax_class(tf_keras)
    assert twin is not ArgMax and issubclass(twin, tf_keras.layers.Layer) and argmax_class(keras) is ArgMax
    inputs = tf_keras.Input((4, 5, 3))
    model = tf_keras.Model(inputs, twin(output_dtype="uint8")(inputs))
    x = np.random.default_rng(7).normal(size=(1, 4, 5, 3)).astype(np.float32)
    np.testing.assert_array_equal(model(x).numpy(), np.argmax(x, -1).astype(np.uint8))
    rebuilt = tf_keras.Model.from_config(model.get_config())
    assert type(rebuilt.layers[-1]).__name__ == "ArgMax"


@pytest.mark.parametrize("kwargs, match", [
    ({"output": "labels", "label_dtype": "int64"}, r"Expected label_dtype to be one of \['int32', 'uint8'\]"),
    ({"host_upsample": True}, "bilinear UpSampling2D / Resizing for host_upsample=True. Received: model 'erfnet'"),
    ({"host_upsample": "yes"}, "Expected host_upsample to be True or False"),
])
def test_head_argument_errors(random_model, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        to_tflite(random_model, tmp_path / "m.tflite", **kwargs)
    assert os.listdir(tmp_path) == []


def test_export_verified_uses_the_mode_bound(random_model, tmp_path):
    from kerasseg.export import MIOU_BOUNDS

    rng = np.random.default_rng(8)
    data = list(zip(rng.normal(size=(2, H, W, 3)).astype(np.float32), rng.integers(0, 4, size=(2, H, W))))
    report = export_verified(random_model, tmp_path / "m.tflite", "fp16", data=data)
    assert report["max_miou_drop"] == MIOU_BOUNDS["fp16"] == 0.1
    assert report["accepted"] == (report["miou_drop"] <= 0.1)
