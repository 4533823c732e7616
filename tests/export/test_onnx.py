"""ONNX export (kerasseg.export.onnx, tools/export_onnx.py): conversion, onnxruntime check, heads, sidecar, errors."""

import json
import os

import keras
import numpy as np
import pytest

import kerasseg
from kerasseg.export import ONNXMismatchError, ONNXModel, read_sidecar, to_onnx
from kerasseg.export import onnx as onnx_export

H, W = 32, 64


@pytest.fixture(scope="module")
def erfnet():
    keras.utils.set_random_seed(7)
    return kerasseg.build_model("erfnet", 4, input_shape=(H, W, 3))


@pytest.fixture(scope="module")
def exported(erfnet, tmp_path_factory):
    return to_onnx(erfnet, tmp_path_factory.mktemp("onnx") / "erfnet.onnx")


def test_erfnet_matches_keras_in_onnxruntime(erfnet, exported):
    import onnx

    proto = onnx.load(exported)
    assert proto.opset_import[0].version == 17
    ops = {node.op_type for node in proto.graph.node}
    assert {"Conv", "ConvTranspose", "MaxPool"} <= ops
    x = np.random.default_rng(1).normal(size=(2, H, W, 3)).astype(np.float32)
    runner = ONNXModel(exported, num_threads=2)
    assert runner.input_shape == (H, W, 3) and runner.head == "scores"
    out = runner(x)
    assert out.shape == (2, H, W, 4)
    np.testing.assert_allclose(out, erfnet(x, training=False).numpy(), atol=1e-4)
    assert runner(x[0]).shape == (H, W, 4)
    with pytest.raises(ValueError, match=r"Expected images of shape \(B, 32, 64, 3\)"):
        runner(np.zeros((1, W, H, 3), np.float32))


def test_sidecar_records_the_export(erfnet, exported):
    meta = read_sidecar(exported)
    assert meta.model_name == "erfnet" and meta.num_classes == 4 and meta.input_shape == [H, W, 3]
    record = meta.extra["export"]
    assert record["format"] == "onnx" and record["opset"] == 17 and record["output"] == "logits"
    assert record["input_shape"] == [1, H, W, 3] and record["output_shape"] == [1, H, W, 4]
    assert record["input_name"] == "image" and record["host_upsample"] is None
    assert 0 <= record["verification"]["max_abs_error"] < 1e-4
    assert "Conv" in record["ops"]
    assert "export" not in erfnet.kerasseg_metadata.extra


def test_convert_to_onnx_returns_the_bytes_to_onnx_writes(erfnet, exported):
    # In memory, like convert_to_tflite: the serialised model, which onnxruntime runs as the written file does.
    data = onnx_export.convert_to_onnx(erfnet, verify=False)
    assert isinstance(data, bytes)
    x = np.random.default_rng(3).normal(size=(1, H, W, 3)).astype(np.float32)
    np.testing.assert_allclose(ONNXModel(data)(x), ONNXModel(exported)(x), atol=1e-5)


def test_label_and_probability_heads(erfnet, tmp_path):
    x = np.random.default_rng(2).normal(size=(1, H, W, 3)).astype(np.float32)
    logits = erfnet(x, training=False).numpy()
    labels_path = to_onnx(erfnet, tmp_path / "labels.onnx", output="labels", label_dtype="uint8")
    runner = ONNXModel(labels_path)
    assert runner.head == "labels"
    labels = runner(x)
    assert labels.dtype == np.uint8 and labels.shape == (1, H, W)
    assert np.mean(labels == np.argmax(logits, -1)) > 0.999
    assert read_sidecar(labels_path).extra["export"]["verification"]["pixel_agreement"] > 0.999

    probs = ONNXModel(to_onnx(erfnet, tmp_path / "probs.onnx", output="probabilities", opset=13))(x)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs, keras.ops.softmax(logits).numpy(), atol=1e-5)


def test_host_upsample_exports_reduced_logits(tmp_path):
    keras.utils.set_random_seed(8)
    model = kerasseg.build_model("deeplabv3plus", 3, input_shape=(64, 96, 3))
    path = to_onnx(model, tmp_path / "dlv3p.onnx", host_upsample=True)
    record = read_sidecar(path).extra["export"]
    assert record["output_shape"] == [1, 16, 24, 3]
    assert record["host_upsample"] == {"method": "bilinear", "half_pixel_centers": True, "size": [64, 96]}
    x = np.random.default_rng(3).normal(size=(1, 64, 96, 3)).astype(np.float32)
    reduced = ONNXModel(path)(x)
    import tensorflow as tf

    full = tf.image.resize(reduced, (64, 96), method="bilinear").numpy()
    np.testing.assert_allclose(full, model(x, training=False).numpy(), atol=1e-4)


def test_a_disagreeing_runtime_is_refused(erfnet, tmp_path, monkeypatch):
    real_session = onnx_export.session

    class Skewed:
        """An onnxruntime session whose outputs are off by one."""

        def __init__(self, session):
            self._session = session

        def __getattr__(self, name):
            return getattr(self._session, name)

        def run(self, names, feeds):
            return [out + 1.0 for out in self._session.run(names, feeds)]

    monkeypatch.setattr(onnx_export, "session", lambda data, num_threads=None: Skewed(real_session(data)))
    with pytest.raises(ONNXMismatchError, match="within") as info:
        to_onnx(erfnet, tmp_path / "skewed.onnx")
    assert info.value.max_abs_error == pytest.approx(1.0, abs=1e-4)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("kwargs, match", [
    ({"opset": 9}, "Expected opset to be an integer in 13..18"),
    ({"opset": "17"}, "Expected opset"),
    ({"output": "argmax"}, "Expected output to be one of"),
    ({"host_upsample": True}, "bilinear UpSampling2D / Resizing"),
    ({"output": "labels", "host_upsample": True}, "output='logits' with host_upsample=True"),
])
def test_bad_arguments_write_nothing(erfnet, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        to_onnx(erfnet, tmp_path / "m.onnx", **kwargs)
    assert os.listdir(tmp_path) == []


def test_path_and_file_errors(erfnet, tmp_path):
    with pytest.raises(ValueError, match=r"ending in '.onnx'. Received: path="):
        to_onnx(erfnet, tmp_path / "m.tflite")
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        ONNXModel(tmp_path / "missing.onnx")
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not a protobuf")
    with pytest.raises(ValueError, match="onnxruntime can load"):
        ONNXModel(bogus)


@pytest.mark.slow
def test_segnet_unpooling_converts(tmp_path):
    keras.utils.set_random_seed(9)
    model = kerasseg.build_model("segnet", 3, input_shape=(64, 64, 3))
    path = to_onnx(model, tmp_path / "segnet.onnx")
    ops = set(read_sidecar(path).extra["export"]["ops"])
    assert {"SpaceToDepth", "Equal", "DepthToSpace"} <= ops, ops
    x = np.random.default_rng(4).normal(size=(1, 64, 64, 3)).astype(np.float32)
    ref = model(x, training=False).numpy()
    np.testing.assert_allclose(ONNXModel(path)(x), ref, atol=1e-4 * max(1.0, float(np.abs(ref).max())))


def test_export_onnx_cli(tmp_path, capsys):
    from kerasseg.cli import export_onnx

    keras.utils.set_random_seed(10)
    model = kerasseg.build_model("erfnet", 3, input_shape=(H, W, 3))
    model_path = kerasseg.save_model(model, str(tmp_path / "model.keras"))
    out = tmp_path / "export" / "m.onnx"
    assert export_onnx.main([model_path, "--output", str(out), "--opset", "17"]) == 0
    printed = capsys.readouterr().out
    assert "onnxruntime check: max |onnxruntime - Keras|" in printed and "wrote" in printed
    assert json.loads((tmp_path / "export" / "m.json").read_text())["extra"]["export"]["format"] == "onnx"
    assert export_onnx.main([model_path, "--output", str(tmp_path / "x.onnx"), "--opset", "3"]) == 2
    assert "Expected opset" in capsys.readouterr().err
    assert export_onnx.main([str(tmp_path / "missing.keras"), "--output", str(tmp_path / "y.onnx")]) == 2
    with pytest.raises(SystemExit):
        export_onnx.main([model_path, "--output", str(tmp_path / "m.tflite")])
