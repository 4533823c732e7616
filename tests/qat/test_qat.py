"""Quantization-aware training: tf_keras rebuild, transposed-conv BN folding, annotation, fine-tune, int8 export,
isolation (the workflow and tools/qat.py: test_qat_workflow.py)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import kerasseg
from tests.edge_checks import assert_deploys
from tests.model_cases import CASES

from tests.paths import ROOT  # noqa: E402

# Small builds for the QAT → int8 matrix: the model_cases builds, narrowed where QAT's fake-quant graph would make
# a step slow. PSPNet needs a multiple of 48, DeepLab of 16 (the output stride).
QAT_CASES = {
    "erfnet": {"num_classes": 3, "input_shape": (32, 32, 3)},
    "fcn32s": {"num_classes": 3, "input_shape": (32, 32, 3), "fc_filters": 16},
    "fcn16s": {"num_classes": 3, "input_shape": (32, 32, 3), "fc_filters": 16},
    "fcn8s": {"num_classes": 3, "input_shape": (32, 32, 3), "fc_filters": 16},
    "segnet": {"num_classes": 3, "input_shape": (32, 32, 3)},
    "unet": CASES["unet"]["kwargs"],
    "unet_padded": {"num_classes": 3, "input_shape": (32, 32, 3), "base_filters": 4},
    "pspnet": {"num_classes": 3, "input_shape": (48, 48, 3)},
    "deeplabv3": {"num_classes": 3, "input_shape": (32, 32, 3), "backbone": "resnet50"},
    "deeplabv3plus": {"num_classes": 3, "input_shape": (32, 32, 3)},
    "lraspp": {"num_classes": 3, "input_shape": (32, 32, 3)},
}


def _build(name):
    kwargs = dict(QAT_CASES[name])
    return kerasseg.build_model(name, kwargs.pop("num_classes"), **kwargs)


def _batch(model, n=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *model.inputs[0].shape[1:])).astype(np.float32)
    y = rng.integers(0, int(model.outputs[0].shape[-1]), size=(n, *model.outputs[0].shape[1:3])).astype(np.int32)
    return x, y


def test_matrix_covers_the_registry():
    assert sorted(QAT_CASES) == kerasseg.list_models()


def test_import_leaves_tf_keras_alone():
    # A fresh interpreter: importing kerasseg, its export package and the QAT package (and its old path) must
    # neither import tfmot / tf_keras nor switch tf.keras to tf_keras.
    code = ("import os, sys; import kerasseg, kerasseg.export, kerasseg.qat, kerasseg.export.qat; "
            "import tensorflow as tf; "
            "print(int('tensorflow_model_optimization' in sys.modules), int('tf_keras' in sys.modules), "
            "tf.keras.version(), os.environ.get('TF_USE_LEGACY_KERAS'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    tfmot_loaded, tf_keras_loaded, version, legacy = out.stdout.split()
    assert (tfmot_loaded, tf_keras_loaded, legacy) == ("0", "0", "None")
    assert version.startswith("3.")


def test_old_module_path_names_the_same_functions():
    import kerasseg.export.qat as old
    import kerasseg.qat as new

    assert set(old.__all__) <= set(new.__all__)
    for name in old.__all__:
        assert getattr(old, name) is getattr(new, name), name


def test_quantize_aware_keeps_environment_and_keras3():
    import keras

    from kerasseg.export import quantize_aware

    before = os.environ.get("TF_USE_LEGACY_KERAS")
    qat_model = quantize_aware(_build("unet_padded"))
    assert os.environ.get("TF_USE_LEGACY_KERAS") == before
    import tensorflow as tf

    assert tf.keras.version().startswith("3.")
    assert type(qat_model).__module__.startswith("tf_keras")
    batch_norms = [layer.layer for layer in qat_model.layers
                   if type(getattr(layer, "layer", None)).__name__ == "BatchNormalization"]
    assert batch_norms and not any(bn.trainable for bn in batch_norms)  # frozen by default
    # Keras 3 still builds Keras 3 models afterwards.
    assert isinstance(kerasseg.build_model("erfnet", 2, input_shape=(16, 16, 3)), keras.Model)


def test_builder_kwargs_recorded_and_survive_keras_round_trip(tmp_path):
    model = kerasseg.build_model("deeplabv3", 3, input_shape=(32, 32, 3), backbone="resnet50", output_stride=8,
                                 multi_grid=(1, 2, 2))
    recorded = model.kerasseg_metadata.extra["builder_kwargs"]
    assert recorded == {"backbone": "resnet50", "output_stride": 8, "multi_grid": [1, 2, 2]}
    json.dumps(recorded)
    from kerasseg.saving import load_model, save_model

    path = save_model(model, tmp_path / "m.keras")
    assert load_model(path).kerasseg_metadata.extra["builder_kwargs"] == recorded


def test_rebuild_copies_weights_and_detects_mismatch():
    from kerasseg.qat import rebuild_tf_keras

    model = _build("erfnet")
    x, _ = _batch(model)
    twin = rebuild_tf_keras(model, check_batch=x)
    np.testing.assert_allclose(twin(x, training=False).numpy(), np.asarray(model(x, training=False)), atol=1e-4)
    # Builder arguments that give another architecture are caught by name / shape, not silently accepted.
    with pytest.raises(ValueError, match="layers|weight shapes"):
        rebuild_tf_keras(model, model_name="erfnet", builder_kwargs={"dropout": 0.0, "early_dropout": 0.0})


def test_rebuild_requires_metadata_or_explicit_name():
    from kerasseg.qat import rebuild_tf_keras
    from kerasseg.models.erfnet import erfnet

    bare = erfnet(3, input_shape=(16, 16, 3))
    with pytest.raises(ValueError, match="kerasseg_metadata"):
        rebuild_tf_keras(bare)
    assert rebuild_tf_keras(bare, model_name="erfnet", builder_kwargs={}).count_params() == bare.count_params()


def test_quantize_aware_rejects_tf_keras_model():
    from kerasseg.qat import quantize_aware, rebuild_tf_keras

    twin = rebuild_tf_keras(_build("unet_padded"))
    with pytest.raises(ValueError, match="Keras 3 model"):
        quantize_aware(twin)


def test_fold_transposed_batchnorm_preserves_outputs():
    from kerasseg.qat import fold_transposed_batchnorm, rebuild_tf_keras

    model = _build("erfnet")
    # Non-trivial batch-norm statistics, so that a wrong fold shows.
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                               rng.normal(0, 0.2, beta.shape).astype("float32"),
                               rng.normal(0, 0.2, mean.shape).astype("float32"),
                               rng.uniform(0.5, 2.0, var.shape).astype("float32")])
    x, _ = _batch(model)
    twin = rebuild_tf_keras(model, check_batch=x)
    folded = fold_transposed_batchnorm(twin)
    names = {layer.name for layer in folded.layers}
    assert {"layer17_bn", "layer20_bn"}.isdisjoint(names) and {"layer17_deconv", "layer20_deconv"} <= names
    np.testing.assert_allclose(folded(x, training=False).numpy(), twin(x, training=False).numpy(), atol=1e-4)
    # Nothing to fold: the same model comes back.
    plain = rebuild_tf_keras(_build("unet_padded"))
    assert fold_transposed_batchnorm(plain) is plain


def test_qat_model_keeps_input_order_and_matches_float_before_training():
    # tfmot's ConcatTransform reconnected DeepLab's ASPP concatenation with the image-pooling branch first
    # (tensorflow/model-optimization#1061), so the projection after it saw its channels permuted.
    import keras

    from kerasseg import qat

    from kerasseg.training import recalibrate_batch_norm

    keras.utils.set_random_seed(0)
    model = _build("deeplabv3plus")
    x, _ = _batch(model, n=4, seed=1)
    recalibrate_batch_norm(model, [x])  # untrained statistics leave the activations near zero
    qat_model = qat.quantize_aware(model, representative_data=x, num_calibration_samples=4)
    twin = qat.rebuild_tf_keras(model)
    for layer in qat_model.layers:
        inbound = qat.inbound_layers(qat_model, layer)
        if len(inbound) > 1:
            original = twin.get_layer(qat.source_name(layer))
            assert ([qat.source_name(src) for src in inbound]
                    == [src.name for src in qat.inbound_layers(twin, original)]), layer.name
    # Numerically: the quantised concatenation holds its branches in the float model's order, up to its own output
    # quantisation (and its clipping, at the range calibrated on the float model).
    import tf_keras

    def output(name):
        layer = [layer for layer in qat_model.layers if qat.source_name(layer) == name][0]
        return qat.layer_nodes(qat_model, layer)[0].output_tensors

    branches = [src.name for src in qat.inbound_layers(twin, twin.get_layer("aspp_concat"))]
    probe = tf_keras.Model(qat_model.inputs, [output("aspp_concat")] + [output(name) for name in branches])
    concat, *parts = [t.numpy() for t in probe(x)]
    expected = np.concatenate(parts, axis=-1)
    step = (concat.max() - concat.min()) / 255
    inside = expected < concat.max() - step
    assert inside.mean() > 0.9
    assert np.abs(concat - expected)[inside].max() <= 1.01 * step


def test_every_model_of_a_process_gets_its_input_range():
    # tfmot names the input quantiser with Keras' unique-name counter: the second QAT model of a process has
    # "quantize_layer_1", which calibration once missed, leaving that model's input range at [0, 0] until training.
    from kerasseg import qat

    model = _build("unet_padded")
    x, _ = _batch(model, n=2, seed=4)
    for _ in range(2):
        qat_model = qat.quantize_aware(model, representative_data=x, num_calibration_samples=2)
        layer = [layer for layer in qat_model.layers if type(layer).__name__ == "QuantizeLayer"][0]
        ranges = {v.name.split("/")[-1].split(":")[0].rsplit("_", 1)[-1]: float(np.asarray(v))
                  for v in layer.non_trainable_weights if v.name.split(":")[0].endswith(("_min", "_max"))}
        assert ranges == pytest.approx({"min": float(x.min()), "max": float(x.max())}), (layer.name, ranges)


def test_qat_loss_matches_the_float_training_loss_with_class_weights():
    import tensorflow as tf

    from kerasseg.qat import masked_sparse_crossentropy
    from kerasseg.losses import SparseCategoricalCrossentropyIgnore

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 6, 4)).astype(np.float32)
    labels = rng.integers(0, 4, (2, 5, 6)).astype(np.int32)
    labels[0, :2] = 255
    weights = [0.5, 2.0, 1.0, 3.0]
    for w in (None, weights):
        expected = SparseCategoricalCrossentropyIgnore(class_weights=w)(labels, logits)
        got = masked_sparse_crossentropy(255, w)(tf.constant(labels), tf.constant(logits))
        np.testing.assert_allclose(float(got), float(expected), rtol=1e-5)
    with pytest.raises(ValueError, match="class_weights"):
        masked_sparse_crossentropy(255, [1.0, -1.0])


def test_qat_to_tflite_rejects_float_model_and_bad_path(tmp_path):
    from kerasseg.qat import qat_to_tflite, rebuild_tf_keras

    twin = rebuild_tf_keras(_build("unet_padded"))
    with pytest.raises(ValueError, match="quantization-aware"):
        qat_to_tflite(twin, tmp_path / "m.tflite")
    with pytest.raises(ValueError, match="'.tflite'"):
        qat_to_tflite(twin, tmp_path / "m.bin")
    assert not os.listdir(tmp_path)


def _qat_int8(name, tmp_path, steps=1):
    from kerasseg.export import float_tensors, io_details, read_sidecar, tflite_ops
    from kerasseg.qat import fine_tune, qat_to_tflite, quantize_aware

    model = _build(name)
    x, y = _batch(model)
    qat_model = quantize_aware(model, check_batch=x[:1])
    history = fine_tune(qat_model, (x, y), epochs=steps, learning_rate=1e-4, verbose=0)
    assert np.isfinite(history["loss"]).all()
    path = qat_to_tflite(qat_model, tmp_path / f"{name}.tflite", representative_data=x)
    ops = tflite_ops(path)
    assert not [op for op in ops if op.startswith("Flex") or op == "CUSTOM"], ops
    assert float_tensors(path) == []
    details = io_details(path)
    # Camera pixels in, like the post-training int8 export: the frame's bytes are the input tensor.
    assert details["input_dtype"] == details["output_dtype"] == "uint8" and details["input_quantization"] == [1.0, 0]
    assert details["output_shape"] == [1, *model.outputs[0].shape[1:]]
    meta = read_sidecar(path)
    assert meta.extra["export"]["quantization"] == "qat" and meta.model_name == name
    # The QAT file describes itself like every export, embedded metadata included.
    from tflite.metadata import read_record

    assert read_record(open(path, "rb").read()) == meta.to_dict()
    assert meta.extra["export"]["input_format"] == "pixels"
    return model, qat_model, path, ops


def test_fine_tune_keeps_the_best_validation_epoch():
    from kerasseg.evaluation import evaluate, keras_predict_fn
    from kerasseg.qat import fine_tune, quantize_aware

    model = _build("erfnet")
    x, y = _batch(model, n=4)
    qat_model = quantize_aware(model, check_batch=x[:1])
    val = list(zip(x[:2], y[:2]))
    # A learning rate large enough to move the score between epochs.
    history = fine_tune(qat_model, (x, y), epochs=3, learning_rate=1e-2, verbose=0, validation_data=val,
                        num_classes=3)
    scores = history["val_miou_per_epoch"]
    assert len(scores) == 4 and history["best_epoch"] == int(np.argmax(scores))
    assert history["val_miou"] == scores[1:]
    kept = evaluate(keras_predict_fn(qat_model), val, num_classes=3, ignore_label=255).miou
    assert kept == pytest.approx(max(scores), abs=1e-9)
    with pytest.raises(ValueError, match="Expected num_classes to be a positive integer with validation_data"):
        fine_tune(qat_model, (x, y), epochs=1, verbose=0, validation_data=val)
    # Selecting on the converted int8 file: the state kept is the one whose file scored best.
    from kerasseg.export import TFLiteModel
    from kerasseg.qat import int8_scorer, qat_to_tflite_bytes

    history = fine_tune(qat_model, (x, y), epochs=1, learning_rate=1e-2, verbose=0,
                        score=int8_scorer(val, 3, representative_data=x))
    scores = history["val_miou_per_epoch"]
    assert len(scores) == 2 and history["best_epoch"] == int(np.argmax(scores))
    lite = TFLiteModel(qat_to_tflite_bytes(qat_model, representative_data=x))
    assert evaluate(lite, val, num_classes=3, ignore_label=255).miou == pytest.approx(max(scores), abs=1e-9)


def test_qat_erfnet_int8_fast(tmp_path):
    from kerasseg.export import TFLiteModel

    model, qat_model, path, ops = _qat_int8("erfnet", tmp_path)
    # Both transposed-conv batch norms are folded, and tfmot folds the Conv2D ones: only the two batch norms after
    # the downsamplers' concatenations remain as MUL (1×1 scale) — never one per conv.
    assert ops.get("TRANSPOSE_CONV") == 3
    assert ops.get("MUL", 0) <= 3, ops
    x, _ = _batch(model, n=1, seed=3)
    lite = TFLiteModel(path)(x)
    ref = qat_model(x, training=False).numpy()
    # int8 vs its own fake-quant graph: within a few output quantisation steps.
    scale = lite.std() + 1e-6
    assert np.mean(np.abs(lite - ref)) < 0.2 * scale + 0.05
    _pixel_file_takes_frames_like_the_normalised_file(model, qat_model, path, tmp_path)
    # The up-samplers' ReLUs are zero-slope PRELUs: a ReLU fused into TRANSPOSE_CONV makes it version 4, which
    # LiteRT's GPU accelerator refuses.
    assert ops.get("PRELU") == 2, ops
    assert_deploys(path)
    # MediaPipe on a QAT pixel file: tests/models/test_pretrained.py runs it on the shipped (trained) QAT files, whose
    # margins make the comparison meaningful; this random-weight model's logits sit within a few steps of a tie.


@pytest.mark.parametrize("name, kwargs", [
    ("erfnet", {"input_shape": (32, 32, 3)}),
    ("deeplabv3plus", {"input_shape": (64, 64, 3)}),
    ("lraspp", {"input_shape": (64, 64, 3)}),
])
def test_twin_takes_the_export_formulations(name, kwargs):
    # The tf_keras twin is planned like the Keras 3 model and, rewritten, still computes the same function, so the
    # QAT file runs the operators every post-training export runs.
    from kerasseg.export.formulations import edge_formulation, formulation_plan
    from kerasseg.qat.twin import import_tf_keras, rebuild_tf_keras

    tf_keras = import_tf_keras()
    model = kerasseg.build_model(name, 3, **kwargs)
    x, _ = _batch(model, n=1)
    twin = rebuild_tf_keras(model, check_batch=x)
    plan = formulation_plan(twin, tf_keras)
    assert plan and plan == formulation_plan(model)
    rewritten = edge_formulation(twin, tf_keras)
    assert rewritten is not twin and formulation_plan(rewritten, tf_keras) == {}
    np.testing.assert_allclose(rewritten(x).numpy(), twin(x).numpy(), atol=1e-4)


def test_qat_deeplabv3plus_passes_the_real_toolchains(tmp_path):
    # Its ×4 RESIZE_BILINEAR (decoder and logits) stayed on the Ethos-U55 / U65 CPU before the twin took the export
    # formulations.
    _, _, path, ops = _qat_int8("deeplabv3plus", tmp_path)
    assert ops.get("RESIZE_NEAREST_NEIGHBOR"), ops
    assert_deploys(path)


def _raw_outputs(path, inputs):
    """Dequantised outputs of a TFLite file fed ``inputs`` as they are, and the output quantisation step."""
    from kerasseg.runtimes.tflite import interpreter, single_io

    runner = interpreter(open(path, "rb").read())
    inp, out = single_io(runner)
    outputs = []
    for x in inputs:
        runner.set_tensor(inp["index"], x[None])
        runner.invoke()
        scale, zero_point = out["quantization"]
        outputs.append((runner.get_tensor(out["index"])[0].astype(np.float32) - zero_point) * scale)
    return np.stack(outputs), scale


def _pixel_file_takes_frames_like_the_normalised_file(model, qat_model, pixels_path, tmp_path):
    """The default (pixel-input) QAT file against the same QAT model exported with normalised input."""
    from kerasseg.export import io_details, read_sidecar
    from kerasseg.preprocessing import normalize_np
    from kerasseg.qat import qat_to_tflite

    normalized_path = qat_to_tflite(qat_model, tmp_path / "normalized.tflite", representative_data=_batch(model)[0],
                                    input_format="normalized")
    details = io_details(normalized_path)
    assert details["input_dtype"] == "int8" and read_sidecar(normalized_path).extra["export"]["input_format"] == (
        "normalized")
    meta = read_sidecar(pixels_path)
    frames = np.random.default_rng(5).integers(0, 256, size=(4, 32, 32, 3)).astype(np.uint8)
    scale, zero_point = details["input_quantization"]
    quantized = np.clip(np.round(normalize_np(frames, meta.mean, meta.std) / scale) + zero_point, -128, 127)
    by_pixels, _ = _raw_outputs(pixels_path, frames)
    by_normalized, step = _raw_outputs(normalized_path, quantized.astype(np.int8))
    # The same network after the same int8 normalised image (to rounding ties): where the normalised file decides by
    # more than a few output steps, both agree. This random-weight model's logits are mostly within 1-2 steps of a
    # tie, where a rounding tie in one input pixel flips the argmax, so the undecided pixels do not count.
    top2 = np.sort(by_normalized, axis=-1)[..., -2:]
    decided = top2[..., 1] - top2[..., 0] > 4.5 * step
    assert decided.sum() >= 100, decided.sum()
    agreement = np.argmax(by_pixels, -1) == np.argmax(by_normalized, -1)
    assert agreement[decided].mean() >= 0.99 and agreement.mean() > 0.8, (agreement[decided].mean(), agreement.mean())


@pytest.mark.heavy
@pytest.mark.parametrize("name", [n for n in sorted(QAT_CASES) if n != "erfnet"])
def test_qat_int8_matrix(name, tmp_path):
    _qat_int8(name, tmp_path)
