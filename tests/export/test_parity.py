"""Parity harness (kerasseg.export.parity in kerasseg.export.harness, tools/parity.py): every runtime scored by the
same code, bounds, table."""

import importlib
import json
import math
import os

import keras
import numpy as np
import pytest

import kerasseg
from kerasseg.export import MIOU_BOUNDS, parity

# `kerasseg.export.parity` is the function; its module is `kerasseg.export.harness`.
parity_module = importlib.import_module("kerasseg.export.harness")
from kerasseg.preprocessing import normalize_np

H, W = 32, 64
MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
COLORS = np.array([[40, 40, 200], [220, 30, 30], [30, 200, 40]], np.float32)


def _scenes(n, seed):
    """Noisy images of three coloured vertical bands in random order, and their label maps."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, H, W, 3), np.float32)
    labels = np.zeros((n, H, W), np.int32)
    for i in range(n):
        cuts = np.sort(rng.choice(np.arange(8, W - 8, 4), 2, replace=False))
        order = rng.permutation(3)
        lab = np.zeros((H, W), np.int32)
        lab[:, :cuts[0]], lab[:, cuts[0]:cuts[1]], lab[:, cuts[1]:] = order
        images[i] = np.clip(COLORS[lab] + rng.normal(0, 15, (H, W, 3)), 0, 255)
        labels[i] = lab
    labels[:, :2] = 255  # an ignored border
    return normalize_np(images, MEAN, STD), labels


def _colour_model(upsample: bool = False):
    """A small per-pixel colour classifier trained to near-perfect accuracy in a few seconds."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((H, W, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", strides=2 if upsample else 1)(inputs)
    x = keras.layers.Conv2D(3, 1)(x)
    if upsample:
        x = keras.layers.UpSampling2D(2, interpolation="bilinear")(x)
    model = keras.Model(inputs, x, name="colours_up" if upsample else "colours")
    x_train, y_train = _scenes(48, 0)
    y_train = np.where(y_train == 255, 0, y_train)
    model.compile(keras.optimizers.Adam(0.02), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, batch_size=8, epochs=8, verbose=0)
    model.kerasseg_metadata = kerasseg.preprocessing.ModelMetadata(
        model_name=model.name, num_classes=3, input_shape=[H, W, 3], class_names=["blue", "red", "green"])
    return model, x_train


@pytest.fixture(scope="module")
def colours():
    return _colour_model()


@pytest.fixture(scope="module")
def result(colours, tmp_path_factory):
    model, x_train = colours
    x_val, y_val = _scenes(6, 1)
    return parity(model, list(zip(x_val, y_val)), representative_data=x_train, num_calibration_samples=16,
                  output_dir=tmp_path_factory.mktemp("parity"), latency_runs=3, verbose=False)


def test_every_runtime_is_scored(result):
    assert [r.name for r in result.rows] == ["keras", "tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8",
                                             "onnx"]
    keras_row = result.row("keras")
    assert keras_row.miou > 0.9 and keras_row.bound is None and keras_row.within_bound is None
    assert result.num_images == 6 and result.class_names == ["blue", "red", "green"]
    for row in result.rows[1:]:
        assert row.bound == MIOU_BOUNDS[row.variant]
        assert row.within_bound == (abs(row.miou_delta) <= row.bound)
        assert row.size_bytes == os.path.getsize(row.path) and row.latency_ms > 0
        assert row.latency_p90_ms >= row.latency_ms
        assert len(row.iou_delta) == 3
        assert row.miou_delta == pytest.approx(100 * (row.miou - keras_row.miou))
        assert row.iou_delta[1] == pytest.approx(100 * (row.iou[1] - keras_row.iou[1]))
        low, high = row.delta_interval
        assert low <= high and high - low < 100
    assert keras_row.delta_interval is None and result.qat_vs_int8 is None
    for name in ("fp32", "onnx"):
        row = result.row(name)
        assert row.pixel_agreement > 0.9999 and row.max_logit_error < 1e-3 and row.within_bound
        assert row.delta_interval == pytest.approx([0.0, 0.0], abs=0.05)
    assert result.row("fp16").pixel_agreement > 0.999
    assert result.row("int8").pixel_agreement > 0.97 and result.row("int8").within_bound
    assert result.ok


def test_table_and_json(result):
    text = result.format()
    for fragment in ("runtime", "tflite-int8", "onnx", "per-class IoU", "green", "int8 goal", "95 % interval"):
        assert fragment in text
    data = json.loads(result.to_json())
    assert data["ok"] is True and len(data["rows"]) == 6 and data["bounds"]["fp16"] == 0.1
    assert all(isinstance(v, float) and math.isfinite(v) for v in data["rows"][1]["iou_delta"])


def test_a_variant_outside_its_bound_fails(colours, monkeypatch):
    model, _ = colours
    x_val, y_val = _scenes(2, 2)
    # A bound no runtime can meet: the fp32 row must report it, and the result as a whole fails.
    monkeypatch.setitem(parity_module.MIOU_BOUNDS, "fp32", -1.0)
    res = parity(model, zip(x_val, y_val), variants=["fp32"], latency_runs=0, verbose=False)
    assert res.row("fp32").within_bound is False and not res.ok
    assert res.row("fp32").latency_ms is None and "NO" in res.format()


def test_host_upsampled_logits_are_resized_like_keras(tmp_path):
    model, x_train = _colour_model(upsample=True)
    x_val, y_val = _scenes(3, 3)
    res = parity(model, zip(x_val, y_val), variants=["fp32", "int8", "onnx"], representative_data=x_train,
                 num_calibration_samples=8, host_upsample=True, output_dir=tmp_path, latency_runs=0, verbose=False)
    for name in ("fp32", "onnx"):
        assert res.row(name).max_logit_error < 1e-3 and res.row(name).pixel_agreement > 0.9999
    assert res.row("int8").pixel_agreement > 0.95
    record = json.loads((tmp_path / "colours_up_fp32.json").read_text())["extra"]["export"]
    assert record["host_upsample"]["size"] == [H, W] and record["output_shape"] == [1, H // 2, W // 2, 3]


def test_a_ready_qat_file_is_scored_with_its_bound(colours, result):
    model, _ = colours
    x_val, y_val = _scenes(6, 1)
    int8 = result.row("int8")
    # The int8 file of the first run, passed in as the quantisation-aware one, scores exactly as it did there.
    res = parity(model, list(zip(x_val, y_val)), variants=[], files={"qat": int8.path}, latency_runs=0,
                 verbose=False)
    row = res.row("tflite-int8-qat")
    assert row.variant == "qat" and row.bound == MIOU_BOUNDS["qat"] == 0.5 and row.path == int8.path
    assert row.miou == pytest.approx(int8.miou) and row.pixel_agreement == pytest.approx(int8.pixel_agreement)
    assert "tflite-int8-qat" in res.format()
    assert row.within_bound == (row.miou_delta >= -0.5)
    assert res.qat_vs_int8 is None
    # Scored beside a post-training export, the QAT row is compared with it on the same images.
    model_, x_train = colours
    both = parity(model_, list(zip(x_val, y_val)), variants=["int8"], files={"qat": int8.path},
                  representative_data=x_train, num_calibration_samples=16, latency_runs=0, verbose=False)
    versus = both.qat_vs_int8
    assert versus["num_images"] == 6
    assert versus["difference"] == pytest.approx(100 * (both.row("qat").miou - both.row("int8").miou))
    assert versus["low"] <= versus["high"]
    assert "QAT - PTQ int8" in both.format() and json.loads(both.to_json())["qat_vs_int8"] == versus
    with pytest.raises(ValueError, match="files keyed by one of"):
        parity(model, list(zip(x_val, y_val)), variants=["fp32"], files={"int4": int8.path})
    with pytest.raises(ValueError, match="existing .tflite"):
        parity(model, list(zip(x_val, y_val)), variants=["fp32"], files={"qat": "missing.tflite"})


def test_device_runtime_scores_full_size_frames(colours, result):
    from tflite.runtime import Segmenter

    model, _ = colours
    x_val, y_val = _scenes(6, 1)
    # Frames twice the model's size: the harness resizes them with tf.image.resize, the runtime with its own resize.
    big = [(np.repeat(np.repeat(x, 2, 0), 2, 1), np.repeat(np.repeat(y, 2, 0), 2, 1)) for x, y in zip(x_val, y_val)]
    int8 = result.row("int8").path
    res = parity(model, big, variants=[], files={"qat": int8}, latency_runs=2, verbose=False,
                 frame_runtime=lambda path: Segmenter(path, num_threads=1).predict)
    assert [r.name for r in res.rows] == ["keras", "tflite-int8-qat", "runtime-qat"]
    library, device = res.row("tflite-int8-qat"), res.row("runtime-qat")
    assert device.variant == "qat" and device.path == int8 and device.latency_ms > 0
    assert device.bound == MIOU_BOUNDS["qat"] and not math.isfinite(device.max_logit_error)
    # The same file on the same frames: only the resize (and the runtime's rounding to uint8 pixels) differ.
    assert abs(device.miou - library.miou) < 0.01 and device.pixel_agreement > 0.97
    assert "runtime-qat" in res.format() and "nan" not in res.format().split("\n")[3]


def test_bad_arguments(colours):
    model, x_train = colours
    data = [_scenes(1, 4)]
    with pytest.raises(ValueError, match="Expected variants to be distinct names"):
        parity(model, data, variants=["fp64"])
    with pytest.raises(ValueError, match="Expected variants"):
        parity(model, data, variants=["fp32", "fp32"])
    with pytest.raises(ValueError, match="representative_data"):
        parity(model, data, variants=["int8"])
    with pytest.raises(ValueError, match="max_images"):
        parity(model, data, variants=["fp32"], max_images=0)
    ignored = (data[0][0], np.full_like(data[0][1], 255))
    with pytest.raises(ValueError, match="scored pixels"):
        parity(model, [ignored], variants=["fp32"], latency_runs=0, verbose=False)


@pytest.mark.slow
def test_parity_cli_on_the_synthetic_dataset(synthetic_root, tmp_path, capsys):
    from kerasseg.cli import parity as parity_tool

    keras.utils.set_random_seed(3)
    model = kerasseg.build_model("erfnet", 8, input_shape=(64, 128, 3))
    model_path = kerasseg.save_model(model, str(tmp_path / "erfnet.keras"))
    out_json = tmp_path / "parity.json"
    argv = [model_path, "--dataset", "folder", "--data-dir", str(synthetic_root), "--variants", "fp32,onnx",
            "--runs", "2", "--json", str(out_json), "--output-dir", str(tmp_path / "exports")]
    assert parity_tool.main(argv) == 0
    printed = capsys.readouterr().out
    assert "tflite-fp32" in printed and "onnx" in printed and "per-class IoU" in printed
    data = json.loads(out_json.read_text())
    assert [r["name"] for r in data["rows"]] == ["keras", "tflite-fp32", "onnx"]
    assert data["rows"][0]["size_bytes"] == os.path.getsize(model_path)
    assert sorted(os.listdir(tmp_path / "exports")) == ["erfnet.json", "erfnet.onnx", "erfnet_fp32.json",
                                                         "erfnet_fp32.tflite"]


def test_parity_cli_argument_errors(tmp_path):
    from kerasseg.cli import parity as parity_tool

    with pytest.raises(SystemExit):
        parity_tool.main([str(tmp_path / "m.keras"), "--variants", "fp32,bogus"])
    with pytest.raises(SystemExit):
        parity_tool.main([str(tmp_path / "m.keras"), "--threads", "0"])
    assert parity_tool.main([str(tmp_path / "missing.keras"), "--variants", "fp32"]) == 2


@pytest.mark.slow
def test_benchmark_export_and_latency_table(tmp_path, capsys):
    from kerasseg.cli import benchmark

    folder = tmp_path / "bench"
    assert benchmark.main(["export", "--model", "erfnet", "--num-classes", "3", "--input-size", "32x64",
                           "--output-dir", str(folder), "--num-calibration", "2"]) == 0
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["files"]) == {"keras", "fp32", "fp16", "int8", "onnx"} and manifest["macs"] > 0
    capsys.readouterr()
    out_json = tmp_path / "latency.json"
    assert benchmark.main(["latency", "--dir", str(folder), "--runs", "2", "--warmup", "1", "--threads", "2",
                           "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    assert "fp32 matmul peak" in printed and "| Keras fp32 (tf.function) |" in printed
    assert "| TFLite int8 |" in printed and "| ONNX (onnxruntime) |" in printed
    data = json.loads(out_json.read_text())
    rows = {r["runtime"]: r for r in data["rows"]}
    assert rows["Keras fp32 (tf.function)"]["speedup_vs_keras"] == 1.0
    keras_ms = rows["Keras fp32 (tf.function)"]["median_ms"]
    for row in data["rows"]:
        assert row["median_ms"] > 0 and row["speedup_vs_keras"] == pytest.approx(keras_ms / row["median_ms"])
        assert row["gflops"] == pytest.approx(2 * manifest["macs"] / (row["median_ms"] / 1e3) / 1e9)
    assert data["matmul_peak"]["gflops"] > 0
    assert benchmark.main(["latency", "--dir", str(tmp_path / "nowhere")]) == 2
    assert benchmark.main(["export", "--output-dir", str(tmp_path / "x"), "--modes", "int4"]) == 2


def test_benchmark_export_of_trained_weights_at_another_size(tmp_path):
    # The shipped ERFNet (trained at 360x480) exported at 64x96: its weights, class count and preprocessing.
    import kerasseg
    from kerasseg.cli import benchmark

    folder = tmp_path / "trained"
    assert benchmark.main(["export", "--weights", "erfnet_camvid", "--input-size", "64x96", "--output-dir",
                           str(folder), "--modes", "fp32", "--no-onnx"]) == 0
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["model"] == "erfnet" and manifest["num_classes"] == 11 and manifest["weights"] == "erfnet_camvid"
    exported = kerasseg.load_model(folder / "erfnet_64x96.keras")
    source = kerasseg.pretrained("erfnet_camvid")
    assert exported.input_shape == (None, 64, 96, 3)
    assert exported.kerasseg_metadata.class_names == source.kerasseg_metadata.class_names
    for a, b in zip(exported.weights, source.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert benchmark.main(["export", "--weights", str(tmp_path / "none.keras"), "--output-dir",
                           str(tmp_path / "y")]) == 2


def test_parity_compare_and_evaluate_count_the_same_confusions(colours, result):
    """The three scorers share one paired loop: the same images give the same matrices, whichever asks."""
    from kerasseg.evaluation import compare_keras_tflite, evaluate, keras_predict_fn
    from kerasseg.runtimes import TFLiteModel

    model, _ = colours
    x_val, y_val = _scenes(6, 1)
    data = list(zip(x_val, y_val))
    fp32 = result.row("tflite-fp32")
    compared = compare_keras_tflite(model, fp32.path, data, 3, 255, per_image=True)
    keras_eval = evaluate(keras_predict_fn(model), data, num_classes=3)
    lite_eval = evaluate(TFLiteModel(fp32.path), data, num_classes=3)
    np.testing.assert_array_equal(compared["keras_confusions"].sum(0), keras_eval.confusion)
    np.testing.assert_array_equal(compared["tflite_confusions"].sum(0), lite_eval.confusion)
    assert compared["keras_miou"] == result.row("keras").miou == keras_eval.miou
    assert compared["tflite_miou"] == fp32.miou == lite_eval.miou
    assert compared["pixel_agreement"] == fp32.pixel_agreement


def test_old_argument_names_still_work_with_a_warning(colours):
    model, _ = colours
    with pytest.warns(DeprecationWarning, match="eval_data"), pytest.raises(ValueError, match="max_images"):
        parity(model, eval_data=[], max_images=0, variants=("fp32",), verbose=False)
    with pytest.raises(TypeError, match="not both"):
        parity(model, [], eval_data=[], verbose=False)
