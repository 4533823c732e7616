"""When int8 misses: int16x8, per-tensor weights, the per-layer report, int8 with float layers, ONNX QDQ int8, and
their parity rows. One small trained model, converted once per variant (module-scoped fixtures)."""

import json
import os

import keras
import numpy as np
import pytest

import kerasseg
from kerasseg.export import EdgeCompatibilityError, TFLiteModel, check, parity, read_sidecar, to_onnx, to_tflite
from kerasseg.export.quant_report import ROUNDING_FLOOR, quant_report
from kerasseg.preprocessing import ModelMetadata

H, W = 32, 64
PALETTE = np.array([[-1.5, -1.0, 1.2], [1.6, -1.2, -0.8], [-0.9, 1.4, -1.1]], np.float32)  # normalised colours


def _blocks(n, seed):
    """Normalised images of three colour classes in random rectangles over a random background, and their labels."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(rng.integers(0, 3, size=(n, 1, 1)), H, 1).repeat(W, 2).astype(np.int32)
    for i in range(n):
        for _ in range(3):
            top, left = rng.integers(0, H - 8), rng.integers(0, W - 8)
            labels[i, top:top + rng.integers(6, 16), left:left + rng.integers(8, 32)] = rng.integers(0, 3)
    images = PALETTE[labels] + rng.normal(0, 0.3, (n, H, W, 3)).astype(np.float32)
    return images.astype(np.float32), labels


@pytest.fixture(scope="module")
def trained():
    """A three-layer colour classifier trained to near-perfect accuracy in a few seconds, and its calibration images."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((H, W, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="middle")(x)
    x = keras.layers.Conv2D(3, 1, name="classifier")(x)
    model = keras.Model(inputs, x, name="blocks")
    images, labels = _blocks(48, 0)
    model.compile(keras.optimizers.Adam(0.02), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images, labels, batch_size=8, epochs=6, verbose=0)
    model.kerasseg_metadata = ModelMetadata(model_name=model.name, num_classes=3, input_shape=[H, W, 3],
                                            class_names=["blue", "red", "green"])
    return model, images[:16]


@pytest.fixture(scope="module")
def exports(trained, tmp_path_factory):
    model, calibration = trained
    folder = tmp_path_factory.mktemp("quantised")
    options = {"int16x8": {"mode": "int16x8"}, "per-tensor": {"mode": "int8", "per_channel": False},
               "per-channel": {"mode": "int8"}, "float1": {"mode": "int8", "float_layers": 1},
               "named": {"mode": "int8", "float_layers": ["middle"]}}
    return {name: to_tflite(model, folder / f"{name}.tflite", representative_data=calibration,
                            num_calibration_samples=8, verbose=False, **kw) for name, kw in options.items()}


def _weight_scales(path):
    """Number of quantisation scales of each CONV_2D weight tensor."""
    interpreter = TFLiteModel(path).interpreter
    ops = interpreter._get_ops_details()  # no public API lists an operator's input tensors
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    return [len(tensors[op["inputs"][1]]["quantization_parameters"]["scales"]) for op in ops
            if op["op_name"] == "CONV_2D"]


def test_int16x8_is_fully_integer_with_int16_activations(trained, exports):
    model, _ = trained
    path = exports["int16x8"]
    record = read_sidecar(path).extra["export"]
    assert record["mode"] == "int16x8" and record["input_dtype"] == "int16" and record["output_dtype"] == "int16"
    assert record["fully_integer"] is True and record["float_tensors"] == []
    assert check(path, "npu").ok
    images, _ = _blocks(2, 5)
    keras_logits = model(images).numpy()
    tflite_logits = TFLiteModel(path)(images)
    int8_logits = TFLiteModel(exports["per-channel"])(images)
    # 256 times finer activation steps: int16x8 must be closer to the float logits than int8 is.
    assert np.abs(tflite_logits - keras_logits).max() < np.abs(int8_logits - keras_logits).max()


def test_per_tensor_weights_have_one_scale_per_tensor(exports):
    assert _weight_scales(exports["per-channel"]) == [8, 8, 3]
    assert _weight_scales(exports["per-tensor"]) == [1, 1, 1]
    record = read_sidecar(exports["per-tensor"]).extra["export"]
    assert record["per_channel"] is False and record["fully_integer"] is True
    assert check(exports["per-tensor"], "npu").ok


def test_float_layers_are_marked_not_integer_and_refused_by_the_npu_target(trained, exports, tmp_path):
    model, calibration = trained
    for name in ("float1", "named"):
        record = read_sidecar(exports[name]).extra["export"]
        assert record["fully_integer"] is False and record["float_tensors"], record
        assert not check(exports[name], "npu").ok
    assert read_sidecar(exports["named"]).extra["export"]["float_layers"] == ["middle"]
    assert any("middle" in t for t in read_sidecar(exports["named"]).extra["export"]["float_tensors"])
    path = tmp_path / "npu.tflite"
    with pytest.raises(EdgeCompatibilityError):
        to_tflite(model, path, "int8", representative_data=calibration, num_calibration_samples=4, float_layers=1,
                  target="npu", verbose=False)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "int8", "float_layers": ["nope"]}, "Received: unknown ['nope']"),
    ({"mode": "int8", "float_layers": 99}, "Received: float_layers=99"),
    ({"mode": "int8", "float_ops": ["LSTM"]}, "Received: unknown ['LSTM']"),
    ({"mode": "int16x8", "per_channel": False}, "Received: mode='int16x8', per_channel=False"),
    ({"mode": "int16x8", "float_layers": 1}, "only with mode='int8'"),
    ({"mode": "int16x8"}, "Received: representative_data=None"),
])
def test_bad_quantisation_options_write_nothing(trained, tmp_path, kwargs, message):
    model, calibration = trained
    data = None if kwargs == {"mode": "int16x8"} else calibration
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        to_tflite(model, tmp_path / "bad.tflite", representative_data=data, num_calibration_samples=4,
                  verbose=False, **kwargs)
    assert os.listdir(tmp_path) == []


def test_quant_report_ranks_every_layer(trained, tmp_path):
    model, calibration = trained
    report = quant_report(model, calibration, num_calibration_samples=4)
    errors = [e.rmse_per_scale for e in report.layers]
    assert errors == sorted(errors, reverse=True)
    # The model's three layers, plus the pixel input's normalisation (a SUB and a MUL in front of the network),
    # which belongs to no Keras layer.
    attributed = [e for e in report.layers if e.layers]
    assert len(attributed) == 3 and {e.op for e in report.layers if not e.layers} == {"SUB", "MUL"}
    assert {layer for e in report.layers for layer in e.layers} == {"stem", "middle", "classifier"}
    # Rounding alone already gives ~0.29 steps; no operator can do much better than that.
    assert all(e > 0.5 * ROUNDING_FLOOR for e in errors)
    assert report.worst(2) == [e.tensor for e in report.layers[:2]]
    with pytest.raises(ValueError, match="from 0 to 5"):
        report.worst(6)
    json_path, text_path = report.write(tmp_path / "report.json")
    data = json.loads(open(json_path).read())
    assert data["rank_metric"] == "rmse/scale" and len(data["layers"]) == 5
    assert "rmse/scale" in open(text_path).read() and report.layers[0].op in report.format()


def test_onnx_qdq_int8_is_symmetric_and_scored(trained, tmp_path):
    import onnx
    from onnx import numpy_helper

    model, calibration = trained
    path = to_onnx(model, tmp_path / "blocks_int8.onnx", mode="int8", representative_data=calibration,
                   num_calibration_samples=8)
    record = read_sidecar(path).extra["export"]
    assert record["mode"] == "int8" and record["quantization"]["format"] == "QDQ"
    assert {"QuantizeLinear", "DequantizeLinear"} <= set(record["ops"])
    assert record["verification"]["pixel_agreement"] >= 0.9
    graph = onnx.load(path).graph
    zero_points = [numpy_helper.to_array(t) for t in graph.initializer if "zero_point" in t.name]
    # TensorRT takes symmetric int8 only: every zero point 0, activations and weights int8 (biases int32).
    assert zero_points and all(not z.any() for z in zero_points)
    assert {z.dtype for z in zero_points} == {np.dtype(np.int8), np.dtype(np.int32)}
    with pytest.raises(ValueError, match="representative_data=None"):
        to_onnx(model, tmp_path / "none.onnx", mode="int8")
    assert not (tmp_path / "none.onnx").exists()


def test_parity_rows_for_the_quantised_variants(trained, tmp_path):
    model, calibration = trained
    images, labels = _blocks(4, 7)
    result = parity(model, list(zip(images, labels)), variants=["int8", "int8-per-tensor", "int16x8",
                                                                "int8-float1", "onnx-int8"],
                    representative_data=calibration, num_calibration_samples=8, latency_runs=1,
                    output_dir=tmp_path, verbose=False)
    assert [r.name for r in result.rows] == ["keras", "tflite-int8", "tflite-int8-per-tensor", "tflite-int16x8",
                                             "tflite-int8-float1", "onnx-int8"]
    assert result.row("int16x8").bound == 0.25 and result.row("int8-float1").bound == 1.0
    assert result.row("keras").miou > 0.9
    for row in result.rows[1:]:
        assert row.within_bound and row.pixel_agreement > 0.95 and row.latency_ms > 0, row
    assert list(result.float_layers) == ["int8-float1"] and len(result.float_layers["int8-float1"]) == 1
    assert "kept in float" in result.format()
    with pytest.raises(ValueError, match="int8-float<N>"):
        parity(model, [], variants=["int8-floatX"])
    # Five ranked operators: the three layers and the pixel input's normalisation (SUB, MUL).
    with pytest.raises(ValueError, match=r"Expected at most 5 float layers .* Received: variants \['int8-float9'\]"):
        parity(model, list(zip(images, labels)), variants=["int8-float9"], representative_data=calibration,
               num_calibration_samples=4, output_dir=tmp_path / "four", verbose=False)
    assert not (tmp_path / "four").exists() or os.listdir(tmp_path / "four") == []


def test_tools_quant_report_and_int8_onnx(trained, synthetic_root, tmp_path):
    from kerasseg.cli import export_onnx, export_tflite
    from kerasseg.cli import quant_report as tool

    model, _ = trained
    keras_path = str(tmp_path / "blocks.keras")
    kerasseg.save_model(model, keras_path)
    out = str(tmp_path / "report.json")
    assert tool.main([keras_path, "--dataset", "folder", "--data-dir", str(synthetic_root), "--num-calibration", "3",
                      "--output", out]) == 0
    assert os.path.isfile(out) and os.path.isfile(out[:-5] + ".txt")
    assert tool.main([keras_path, "--dataset", "folder", "--data-dir", str(tmp_path / "missing")]) == 2
    onnx_path = str(tmp_path / "blocks_int8.onnx")
    assert export_onnx.main([keras_path, "--output", onnx_path, "--mode", "int8", "--dataset", "folder",
                             "--data-dir", str(synthetic_root), "--num-calibration", "3"]) == 0
    assert read_sidecar(onnx_path).extra["export"]["quantization"]["calibration_images"] == 3
    tflite_path = str(tmp_path / "blocks_16x8.tflite")
    common = ["--dataset", "folder", "--data-dir", str(synthetic_root), "--num-calibration", "3", "--force",
              "--max-eval-images", "2"]
    assert export_tflite.main([keras_path, "--mode", "int16x8", "--output", tflite_path] + common) == 0
    assert read_sidecar(tflite_path).extra["export"]["input_dtype"] == "int16"
    assert export_tflite.main([keras_path, "--mode", "int8", "--float-layers", "nope", "--output",
                               str(tmp_path / "bad.tflite")] + common) == 2
    assert not os.path.exists(tmp_path / "bad.tflite")
