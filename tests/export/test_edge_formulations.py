"""Export formulations: each equals the faithful Keras operation and converts to operators the edge compilers take."""

import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasseg
from kerasseg.export import output_upsampling
from kerasseg.export.formulations import edge_formulation, formulation_plan
from kerasseg.export.tflite import convert_to_tflite, tflite_ops, TFLiteModel
from kerasseg.layers.edge_ops import (PooledBilinearUpsampling2D, bilinear_upsample, interleave_cells,
                                      nearest_steps, nearest_upsample, window_cells)
from kerasseg.layers.unpooling import MaxUnpooling2D

# Operators Vela places on the CPU of every Ethos-U (absent from SUPPORTED_OPS.md), and RESIZE_BILINEAR, which it
# runs only ×2 on Ethos-U55 / U65 and by powers of two on Ethos-U85.
NOT_ON_ETHOS_U = {"SPACE_TO_DEPTH", "DEPTH_TO_SPACE", "RESIZE_BILINEAR"}


@pytest.mark.parametrize("shape, factors", [
    ((3, 5), (4, 4)), ((2, 2), (15, 15)), ((3, 3), (6, 6)), ((4, 3), (8, 8)), ((2, 3), (16, 16)), ((4, 4), (3, 3)),
    ((3, 4), (4, 2)), ((1, 1), (9, 9)), ((1, 3), (4, 4)), ((3, 2), (2, 2)),
])
def test_bilinear_upsample_equals_half_pixel_resize(shape, factors):
    x = np.random.default_rng(0).normal(size=(2, *shape, 3)).astype(np.float32)
    size = (shape[0] * factors[0], shape[1] * factors[1])
    expected = tf.image.resize(x, size, "bilinear").numpy()
    got = bilinear_upsample(tf.constant(x), *factors).numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_window_cells_and_interleave_are_space_to_depth_and_back():
    x = tf.constant(np.random.default_rng(1).normal(size=(2, 6, 9, 4)).astype(np.float32))
    cells = window_cells(x, 3)
    for got, expected in zip(cells, tf.split(tf.nn.space_to_depth(x, 3), 9, axis=-1)):
        np.testing.assert_array_equal(got.numpy(), expected.numpy())
    np.testing.assert_array_equal(interleave_cells(cells, 3).numpy(), x.numpy())
    with pytest.raises(ValueError, match="multiples of block=4"):
        window_cells(x, 4)


def test_nearest_upsample_steps_stay_within_what_ethos_u55_resizes():
    assert nearest_steps(16) == [8, 2] and nearest_steps(4) == [4] and nearest_steps(45) == [45]
    x = np.random.default_rng(2).normal(size=(1, 2, 3, 2)).astype(np.float32)
    np.testing.assert_array_equal(nearest_upsample(tf.constant(x), 16, 16).numpy(),
                                  np.repeat(np.repeat(x, 16, axis=1), 16, axis=2))
    with pytest.raises(ValueError, match=r"Expected factor to be a positive integer. Received: factor=0"):
        nearest_steps(0)


def test_pooled_bilinear_layer_serialises_and_validates():
    layer = PooledBilinearUpsampling2D((4, 3), name="up")
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(clone, PooledBilinearUpsampling2D) and clone.size == (4, 3)
    with pytest.raises(ValueError, match=r"Received: size\[1\]=0"):
        PooledBilinearUpsampling2D((2, 0))


def _resize_model(factor: int = 8):
    # ×4 and ×8 (DeepLab) are not on Ethos-U55 as RESIZE_BILINEAR, ×3 (PSPNet's bins) is not a power of two.
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.UpSampling2D(4, interpolation="bilinear", name="up4")(x)
    x = keras.layers.Conv2D(4, 3, strides=8, padding="same", name="down")(x)
    x = keras.layers.Resizing(4 * factor, 4 * factor, interpolation="bilinear", name="up")(x)
    return keras.Model(inputs, keras.layers.Conv2D(3, 1, name="logits")(x))


def _transposed_model():
    # ERFNet's up-sampler: transposed convolution → batch norm → ReLU feeding a residual addition.
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same", name="deconv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    y = keras.layers.Conv2D(4, 3, padding="same", name="conv")(x)
    return keras.Model(inputs, keras.layers.Add(name="add")([x, y]))


def _unpooling_model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    pooled = keras.layers.MaxPooling2D(2, name="pool")(x)
    y = keras.layers.Conv2D(4, 3, padding="same", name="mid")(pooled)
    return keras.Model(inputs, MaxUnpooling2D(2, name="unpool")([y, x, pooled]))


def _randomise_batch_norm(model):
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            rng = np.random.default_rng(3)
            layer.set_weights([rng.uniform(0.5, 2.0, w.shape).astype(np.float32) if i in (0, 3)
                               else rng.normal(size=w.shape).astype(np.float32)
                               for i, w in enumerate(layer.get_weights())])
    return model


@pytest.fixture(scope="module")
def conversions():
    """The small models and their fp32 / fp16 / int8 TFLite conversions (normalised input: the test models are
    not RGB, and the comparison feeds the same values to Keras and TFLite)."""
    rng = np.random.default_rng(4)
    out = {}
    builders = (("resize", _resize_model), ("resize_odd", lambda: _resize_model(3)),
                ("transposed", _transposed_model), ("unpooling", _unpooling_model))
    for name, build in builders:
        keras.utils.set_random_seed(5)
        model = _randomise_batch_norm(build())
        shape = tuple(model.inputs[0].shape[1:])
        calibration = [rng.normal(size=shape).astype(np.float32) for _ in range(4)]
        out[name] = (model, {mode: convert_to_tflite(model, mode, representative_data=calibration,
                                                     num_calibration_samples=4, verbose=False,
                                                     input_format="normalized")
                             for mode in ("fp32", "fp16", "int8")})
    return out


def test_formulation_computes_what_the_keras_model_computes_and_leaves_it_unchanged():
    model = _randomise_batch_norm(_transposed_model())
    assert formulation_plan(model) == {"relu": "PReLU(alpha=0)"}
    resize = _resize_model()
    assert formulation_plan(resize) == {"up4": "PooledBilinearUpsampling2D(size=(4, 4))",
                                        "up": "PooledBilinearUpsampling2D(size=(8, 8))"}
    for m in (model, resize):
        plan = formulation_plan(m)
        x = np.random.default_rng(6).normal(size=(2, *m.inputs[0].shape[1:])).astype(np.float32)
        np.testing.assert_allclose(edge_formulation(m)(x).numpy(), m(x).numpy(), atol=1e-5)
        # The original layers were not called again, so a second export plans the same rewrite.
        assert formulation_plan(m) == plan
    unpooling = _unpooling_model()
    assert formulation_plan(unpooling) == {} and edge_formulation(unpooling) is unpooling


def test_formulation_keeps_host_upsampling_of_deeplab():
    model = kerasseg.build_model("deeplabv3plus", num_classes=3, input_shape=(64, 64, 3))
    plan = formulation_plan(model)
    assert set(plan) == {"aspp_pool_upsample", "decoder_upsample", "logits"}
    edge_formulation(model)
    assert output_upsampling(model)[1] == (64, 64)


def _operator_versions(data: bytes) -> dict:
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    root = schema.Model.GetRootAs(data, 0)
    return {names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]: code.Version()
            for code in (root.OperatorCodes(i) for i in range(root.OperatorCodesLength()))}


@pytest.mark.parametrize("name", ["resize", "resize_odd", "transposed", "unpooling"])
def test_converted_formulations_match_keras_and_avoid_refused_operators(conversions, name):
    model, files = conversions[name]
    x = np.random.default_rng(7).normal(size=(2, *model.inputs[0].shape[1:])).astype(np.float32)
    expected = model(x).numpy()
    for mode, data in files.items():
        ops = tflite_ops(data)
        # int8 files are for the NPUs; float ones for the GPU, which runs SPACE_TO_DEPTH / DEPTH_TO_SPACE.
        assert not (NOT_ON_ETHOS_U if mode == "int8" else {"RESIZE_BILINEAR"}) & set(ops), (mode, ops)
        got = TFLiteModel(data)(x)
        scale = np.abs(expected).max()
        tolerance = {"fp32": 1e-4, "fp16": 2e-2, "int8": 0.1}[mode] * scale
        assert np.abs(got - expected).max() <= tolerance, (mode, np.abs(got - expected).max(), scale)
    if name.startswith("resize"):
        assert {"RESIZE_NEAREST_NEIGHBOR", "AVERAGE_POOL_2D"} <= set(tflite_ops(files["int8"]))
    if name == "transposed":
        # LiteRT's GPU accelerator takes TRANSPOSE_CONV up to version 3; a fused activation makes it version 4.
        for data in files.values():
            assert _operator_versions(data)["TRANSPOSE_CONV"] <= 3
            assert "PRELU" in tflite_ops(data)


def _vela_cpu_operators(tmp_path, data: bytes, config: str) -> int:
    path = tmp_path / f"{config}.tflite"
    path.write_bytes(data)
    run = subprocess.run([sys.executable, "-m", "ethosu.vela", "--accelerator-config", config, str(path),
                          "--output-dir", str(tmp_path / config)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    found = re.search(r"CPU operators = (\d+)", run.stdout)
    assert found, run.stdout
    return int(found.group(1))


@pytest.mark.parametrize("config", ["ethos-u55-128", "ethos-u85-256"])
def test_vela_runs_every_int8_formulation_on_the_npu(conversions, tmp_path, config):
    pytest.importorskip("ethosu.vela", reason="Arm Vela (ethos-u-vela) is installed by the dev extra")
    for name, (_, files) in conversions.items():
        if name == "resize_odd" and config != "ethos-u85-256":
            continue  # RESIZE_NEAREST_NEIGHBOR ×3: Ethos-U55 / U65 up-sample by 2, 4 or 8 only
        assert _vela_cpu_operators(tmp_path, files["int8"], config) == 0, (name, config)


def _switch_probe():
    """Max-unpooling of the input itself: the pre-pool map is the input, exact in float16, so the GPU and the CPU
    pool the same values and any difference is the unpooling's."""
    inputs = keras.Input((8, 16, 4))
    pooled = keras.layers.MaxPooling2D(2, name="pool")(inputs)
    updates = keras.layers.Rescaling(1.0, offset=16.0, name="updates")(pooled)  # never 0: a moved value shows
    return keras.Model(inputs, MaxUnpooling2D(2, name="unpool")([updates, inputs, pooled]))


def _switch_probe_input() -> np.ndarray:
    rng = np.random.default_rng(8)
    # Multiples of 1 / 8 in [-8, 8): exact in float16, with many ties (first maximum wins).
    x = rng.integers(-64, 64, size=(1, 8, 16, 4)) / 8.0
    # Half the windows hold 1 + k / 1024, k a permutation of 0..3: distinct only in float16's last bit.
    fine = 1.0 + rng.permuted(np.tile(np.arange(4), (4 * 8 * 4, 1)), axis=1) / 1024.0
    fine = fine.reshape(4, 8, 4, 2, 2).transpose(0, 3, 1, 4, 2).reshape(8, 16, 4)
    x[0, :, 8:] = fine[:, 8:]
    return x.astype(np.float32)


@pytest.mark.parametrize("mode", ["fp32", "fp16"])
@pytest.mark.parametrize("enforce_f32", [False, True])
def test_unpooling_switches_on_the_gpu_match_the_cpu_at_either_precision(mode, enforce_f32):
    # At the GPU's default precision (float16) SegNet's argmax agrees with the CPU on 59 % of pixels; this holds the
    # unpooling itself to the CPU on a pre-pool map both see alike, so that disagreement is float16's in the maps
    # that feed it (docs/edge_formulations.md). fp16 at enforce_f32: with SELECT_V2 against a constant zero the
    # accelerator's shader failed validation and the GPU output was all zeros.
    from tests.edge_checks import gpu_run

    data = convert_to_tflite(_switch_probe(), mode, verbose=False, input_format="normalized")
    x = _switch_probe_input()
    expected = _switch_probe()(x).numpy()
    np.testing.assert_array_equal(TFLiteModel(data)(x), expected)
    report = gpu_run(data, run_input=x, enforce_f32=enforce_f32)
    assert report.ok, report.format()
    # A value placed in the wrong cell differs by >= 8; float16 rounds the updates (in [8, 24)) by 1 / 128 at most.
    assert report.run["enforce_f32"] is enforce_f32 and report.run["max_abs_diff"] <= 1 / 128, report.format()
    with pytest.raises(TypeError, match="Expected enforce_f32 to be a bool"):
        gpu_run(data, enforce_f32="default")
