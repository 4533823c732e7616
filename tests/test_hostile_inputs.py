"""Files that lie, truncated or foreign files, calibration data that cannot belong, wrong types: each gets a clear,
typed error naming the file or argument, and leaves no file behind."""

import json
import os
import zipfile

import numpy as np
import pytest

H, W, K = 8, 12, 3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A two-layer Keras model, its .keras file and its fp32 .tflite with sidecar."""
    import keras

    import kerasseg
    from kerasseg.export import to_tflite
    from kerasseg.preprocessing import ModelMetadata

    keras.utils.set_random_seed(0)
    inputs = keras.Input((H, W, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="features")(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(K, 1, name="logits")(x), name="tiny_hostile_net")
    model.kerasseg_metadata = ModelMetadata.for_model(model, "tiny_hostile_net").with_dataset(
        class_names=["a", "b", "c"], palette=[[1, 2, 3], [4, 5, 6], [7, 8, 9]], ignore_label=255)
    folder = tmp_path_factory.mktemp("hostile")
    keras_path = kerasseg.save_model(model, str(folder / "tiny.keras"))
    tflite_path = to_tflite(model, str(folder / "tiny.tflite"), verbose=False)
    return {"model": model, "keras": keras_path, "tflite": tflite_path, "folder": folder}


def _listing(folder):
    return sorted(os.listdir(folder))


# ------------------------------------------------------------------------------------------- calibration data

def _calibration(n=4, seed=0):
    return list(np.random.default_rng(seed).normal(size=(n, H, W, 3)).astype(np.float32))


@pytest.mark.parametrize("case,match", [
    ("nan", r"NaN or infinite values in representative_data element 2"),
    ("inf_in_batch", r"NaN or infinite values in representative_data element 0, image 1 of its batch"),
    ("pixels", r"Received: dtype uint8 in representative_data element 0"),
    ("channels", r"model input \(8, 12, 3\)\. Received: shape \(8, 12, 4\) in representative_data element 1"),
    ("empty_image", r"Received: shape \(0, 12, 3\) in representative_data element 0"),
    ("empty_tuple", r"an empty tuple as representative_data element 0"),
])
def test_int8_export_refuses_calibration_data_that_cannot_belong(tiny, tmp_path, case, match):
    from kerasseg.errors import CalibrationDataError
    from kerasseg.export import to_tflite

    data = _calibration()
    if case == "nan":
        data[2][3, 4, 1] = np.nan  # pulled by the converter, after conversion started
    elif case == "inf_in_batch":
        batch = np.stack(data[:2])
        batch[1, 0, 0, 0] = np.inf
        data = [batch]
    elif case == "pixels":
        data = [np.zeros((H, W, 3), np.uint8)]
    elif case == "channels":
        data[1] = np.zeros((H, W, 4), np.float32)
    elif case == "empty_image":
        data = [np.zeros((0, W, 3), np.float32)]
    elif case == "empty_tuple":
        data = [()]
    with pytest.raises(CalibrationDataError, match=match):
        to_tflite(tiny["model"], tmp_path / "int8.tflite", "int8", representative_data=data,
                  num_calibration_samples=4, verbose=False)
    assert _listing(tmp_path) == []  # neither the model, nor its sidecar, nor a temporary file


def test_calibration_error_is_a_value_error(tiny, tmp_path):
    from kerasseg.export import to_tflite

    with pytest.raises(ValueError, match="representative_data element 0"):
        to_tflite(tiny["model"], tmp_path / "int8.tflite", "int8", representative_data=[[np.nan] * 3],
                  verbose=False)


# ------------------------------------------------------------------------------------------------ wrong types

@pytest.mark.parametrize("value,shown", [("hello", "model='hello'"), (42, "model=42 of type int"),
                                         (None, "model=None")])
def test_exporters_refuse_a_non_model_with_a_type_error(tiny, tmp_path, value, shown):
    from kerasseg.errors import NotAModelError
    from kerasseg.export import export_verified, parity, to_onnx, to_tflite
    from kerasseg.export.datasets import export_data

    for call in (lambda: to_tflite(value, tmp_path / "x.tflite"), lambda: to_onnx(value, tmp_path / "x.onnx"),
                 lambda: export_data(value, "folder", tmp_path), lambda: parity(value, []),
                 lambda: export_verified(value, tmp_path / "x.tflite", eval_data=[])):
        with pytest.raises(NotAModelError, match="Expected model to be a Keras 3 model") as e:
            call()
        assert isinstance(e.value, TypeError) and shown in str(e.value)
    assert _listing(tmp_path) == []


def test_exporter_accepts_a_keras_path(tiny, tmp_path):
    from kerasseg.export import read_sidecar, to_tflite

    path = to_tflite(tiny["keras"], tmp_path / "from_path.tflite", verbose=False)
    assert read_sidecar(path).class_names == ["a", "b", "c"]
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        to_tflite(str(tmp_path / "missing.keras"), tmp_path / "y.tflite")


def test_to_tflite_names_the_exporter_of_a_quantization_aware_model(tmp_path):
    import tf_keras

    from kerasseg.errors import NotAModelError
    from kerasseg.export import to_tflite

    inputs = tf_keras.Input((H, W, 3))
    qat_like = tf_keras.Model(inputs, tf_keras.layers.Conv2D(K, 1)(inputs), name="qat_net")
    with pytest.raises(NotAModelError, match=r"qat_to_tflite\(qat_model, path"):
        to_tflite(qat_like, tmp_path / "q.tflite", "int8", representative_data=_calibration())
    assert _listing(tmp_path) == []


# ------------------------------------------------------------------------------------- files that lie to the runtime

def _lying_copy(tiny, tmp_path, change):
    import shutil

    model = tmp_path / "lying.tflite"
    shutil.copy(tiny["tflite"], model)
    meta = json.loads(open(os.path.splitext(tiny["tflite"])[0] + ".json").read())
    change(meta)
    (tmp_path / "lying.json").write_text(json.dumps(meta))
    return model


def _set(key, value):
    def change(meta):
        target = meta
        *parents, last = key.split(".")
        for p in parents:
            target = target[p]
        target[last] = value
    return change


@pytest.mark.parametrize("key,value,match", [
    ("num_classes", 5, r"Expected num_classes=3 \(the model's output channels\).*Received: num_classes=5"),
    ("num_classes", "3", r"Expected num_classes to be a positive integer.*Received: num_classes='3'"),
    ("input_shape", [16, 12, 3], r"Expected input_shape \[8, 12, 3\].*Received: input_shape=\[16, 12, 3\]"),
    ("extra.export.input_dtype", "int8", r"extra.export.input_dtype='float32'.*Received: input_dtype='int8'"),
    ("extra.export.input_shape", [1, 4, 4, 3], r"Received: input_shape=\[1, 4, 4, 3\]"),
    ("extra.export.mode", "int8", r"Expected mode a float mode.* for a model whose input is float32.*mode='int8'"),
    ("extra.export.input_quantization", [0.5, 3], r"input_quantization=None.*Received: input_quantization=\[0.5"),
    ("extra.export.output", "labels", r"Received: output='labels'"),
    ("std", [58.0, 0.0, 57.0], r"Expected std to be 1 or 3 finite numbers > 0"),
    ("mean", [1.0, 2.0], r"Expected mean to be 1 or 3 finite numbers"),
    ("class_names", ["a", "b"], r"Expected class_names to list the 3 classes.*Received: class_names of length 2"),
    ("palette", [[1, 2, 3], [4, 5, 6], [7, 8, 999]], r"Expected a palette of \[r, g, b\] colours"),
    ("ignore_label", "255", r"Expected ignore_label to be an integer or null"),
    ("extra.export.host_upsample", {"method": "bilinear", "size": [8, -1]}, r"host_upsample"),
])
def test_runtime_refuses_a_sidecar_that_contradicts_its_model(tiny, tmp_path, key, value, match):
    from tflite.runtime import Segmenter

    path = _lying_copy(tiny, tmp_path, _set(key, value))
    with pytest.raises(ValueError, match=match) as e:
        Segmenter(path, num_threads=1)
    assert "lying.json" in str(e.value) and "lying.tflite" in str(e.value)


def test_runtime_names_truncated_and_foreign_files(tiny, tmp_path):
    from tflite.runtime import Segmenter

    model = _lying_copy(tiny, tmp_path, lambda meta: None)
    assert Segmenter(model, num_threads=1).num_classes == K  # the honest copy loads
    sidecar = tmp_path / "lying.json"
    text = sidecar.read_text()
    sidecar.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=r"Expected a kerasseg metadata JSON.*lying\.json"):
        Segmenter(model)
    sidecar.write_text(text)
    data = model.read_bytes()
    model.write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match=r"Expected a TFLite model file.*lying\.tflite"):
        Segmenter(model)
    model.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    with pytest.raises(ValueError, match=r"Expected a TFLite model file.*lying\.tflite"):
        Segmenter(model)


# --------------------------------------------------------------------------------------- host-side readers

def test_host_readers_name_lying_truncated_and_foreign_files(tiny, tmp_path):
    import kerasseg
    from kerasseg.errors import InvalidFileError
    from kerasseg.export import read_sidecar
    from kerasseg.saving import read_metadata

    sidecar = tmp_path / "s.json"
    sidecar.write_text('{"model_name": "x", "num_classes": 3, "input_')
    with pytest.raises(InvalidFileError, match=r"does not parse.*s\.json"):
        read_sidecar(sidecar)
    sidecar.write_text(json.dumps({"model_name": "x", "num_classes": -3, "input_shape": [8, 12, 3]}))
    with pytest.raises(InvalidFileError, match=r"num_classes to be a positive integer.*s\.json"):
        read_sidecar(sidecar)
    sidecar.write_text(json.dumps([1, 2]))
    with pytest.raises(InvalidFileError, match=r"a JSON object.*s\.json"):
        read_sidecar(sidecar)

    raw = open(tiny["keras"], "rb").read()
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InvalidFileError, match=r"truncated\.keras.*not a zip archive"):
        kerasseg.load_model(truncated)
    lying = tmp_path / "lying.keras"
    with zipfile.ZipFile(tiny["keras"]) as src, zipfile.ZipFile(lying, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "kerasseg.json":
                meta = json.loads(data)
                meta["class_names"] = ["only one"]
                data = json.dumps(meta).encode()
            dst.writestr(item, data)
    with pytest.raises(InvalidFileError, match=r"class_names to be 3 strings.*kerasseg\.json entry of .*lying\.keras"):
        read_metadata(lying)
