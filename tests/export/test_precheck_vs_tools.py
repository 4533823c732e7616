"""kerasseg's hand-written pre-check (``check(path, target, toolchain=False)``) against the real tools' verdicts, in
both directions, on tiny graphs: Arm Vela 5.2 for Ethos-U55 / U65 / U85 (int8 files) and LiteRT's GPU accelerator
(float files). The table holds graphs the tools refuse and graphs they accelerate; each row also states the tool's
verdict, so that the table keeps its refusals when a tool changes."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasseg.export import check, to_tflite
from tests.edge_checks import gpu_check
from tests.plain_conversion import plain_conversion

U55, U65, U85 = "ethos-u55-128", "ethos-u65-256", "ethos-u85-256"
ETHOS_U = (U55, U65, U85)


def _features(size=8, channels=4):
    inputs = keras.Input((size, size, channels))
    return inputs, keras.layers.Conv2D(4, 3, padding="same")(inputs)


def _upsampling(factor, interpolation="bilinear"):
    inputs, x = _features()
    return keras.Model(inputs, keras.layers.UpSampling2D(factor, interpolation=interpolation)(x))


def _resizing(size, interpolation="bilinear", height=None):
    inputs, x = _features()
    return keras.Model(inputs, keras.layers.Resizing(height or size, size, interpolation=interpolation)(x))


def _transposed(stride, relu=False, channels=4):
    inputs, x = _features(channels=channels)
    y = keras.layers.Conv2DTranspose(channels, 3, strides=stride, padding="same")(x)
    if relu:
        y = keras.layers.ReLU()(keras.layers.BatchNormalization()(y))
    return keras.Model(inputs, y)


def _lambda(fn):
    inputs, x = _features()
    return keras.Model(inputs, keras.layers.Lambda(fn)(x))


def _unpool_like(t):
    # The float formulation of max unpooling: EQUAL and SELECT_V2.
    return tf.where(tf.equal(t, tf.reduce_max(t, -1, keepdims=True)), t, tf.zeros_like(t))


def _dynamic_range():
    inputs = keras.Input((16, 16, 16))
    # Enough weights (64×16×3×3) that the converter quantises them to int8.
    x = keras.layers.Conv2D(64, 3, padding="same")(inputs)
    return keras.Model(inputs, keras.layers.Conv2DTranspose(32, 3, strides=2, padding="same")(x))


@dataclasses.dataclass(frozen=True)
class Case:
    """A tiny graph, how it is converted, and the real tools' verdicts: ``{target: accelerated in full}``."""

    build: object
    conversion: str  # "kerasseg" (to_tflite, edge formulations) or "plain" (TensorFlow's converter alone)
    verdicts: dict
    kwargs: dict = dataclasses.field(default_factory=dict)  # to_tflite's, for "kerasseg"


def _all(ok):
    return dict.fromkeys(ETHOS_U, ok)


CASES = {
    # Ethos-U (int8). Vela runs half-pixel bilinear ×2 everywhere, ×4 on U85 only, ×3 and 8 -> 20 nowhere.
    "bilinear_x2": Case(lambda: _upsampling(2), "kerasseg", _all(True)),
    "bilinear_x4": Case(lambda: _upsampling(4), "plain", {U55: False, U65: False, U85: True}),
    "bilinear_x4_formulated": Case(lambda: _upsampling(4), "kerasseg", _all(True)),
    "bilinear_x3": Case(lambda: _upsampling(3), "plain", _all(False)),
    "bilinear_8_to_20": Case(lambda: _resizing(20), "plain", _all(False)),
    "bilinear_x2_by_x4": Case(lambda: _resizing(32, height=16), "plain", {U55: False, U65: False, U85: True}),
    "nearest_x4": Case(lambda: _resizing(32, "nearest"), "plain", _all(True)),
    "nearest_x3": Case(lambda: _resizing(24, "nearest"), "plain", {U55: False, U65: False, U85: True}),
    "transpose_conv_stride_2": Case(lambda: _transposed(2), "kerasseg", _all(True)),
    "transpose_conv_stride_4": Case(lambda: _transposed(4), "plain", {U55: False, U65: False, U85: True}),
    "space_to_depth": Case(lambda: _lambda(lambda t: tf.nn.space_to_depth(t, 2)), "plain", _all(False)),
    "equal_select": Case(lambda: _lambda(_unpool_like), "plain", {U55: False, U65: False, U85: True}),
    # GPU (float). A ReLU fused into TRANSPOSE_CONV is version 4, which the accelerator refuses; kerasseg keeps it
    # apart. Keras' nearest UpSampling2D lowers to rank-5 RESHAPE / TILE, which it refuses too.
    "transpose_conv_relu": Case(lambda: _transposed(2, relu=True), "plain", {"gpu": False}),
    "transpose_conv_relu_formulated": Case(lambda: _transposed(2, relu=True), "kerasseg", {"gpu": True}),
    "nearest_upsampling_x2": Case(lambda: _upsampling(2, "nearest"), "plain", {"gpu": False}),
    "bilinear_x4_float": Case(lambda: _upsampling(4), "plain", {"gpu": True}),
    "space_to_depth_float": Case(lambda: _lambda(lambda t: tf.nn.space_to_depth(t, 2)), "plain", {"gpu": True}),
    "label_head_uint8": Case(lambda: keras.Model(*_features()), "kerasseg", {"gpu": True},
                             dict(output="labels", label_dtype="uint8")),
    "dynamic_range": Case(_dynamic_range, "kerasseg", {"gpu": True}, dict(mode="dynamic")),
}
PAIRS = [pytest.param(name, target, id=f"{name}-{target}") for name, case in CASES.items() for target in case.verdicts]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """``get(name, int8)``: the case's file, converted once per module."""
    folder, cache = tmp_path_factory.mktemp("precheck"), {}

    def get(name: str, int8: bool) -> str:
        if (name, int8) not in cache:
            case = CASES[name]
            keras.utils.set_random_seed(7)
            model = case.build()
            path = folder / f"{name}_{'int8' if int8 else 'float'}.tflite"
            if case.conversion == "plain":
                cache[name, int8] = plain_conversion(model, path, int8=int8)
            else:
                kwargs = {"mode": "int8" if int8 else "fp32", **case.kwargs}
                calibration = np.random.default_rng(0).normal(size=(4, *model.inputs[0].shape[1:]))
                cache[name, int8] = to_tflite(model, path, representative_data=calibration.astype(np.float32),
                                              num_calibration_samples=4, verbose=False, input_format="normalized",
                                              **kwargs)
        return cache[name, int8]

    return get


def _tool_ops(report) -> set:
    """The operator types the real tool leaves to the CPU."""
    if report.gpu is not None:
        return {f.op for f in report.gpu.fallbacks}
    return {op.op for op in report.vela.cpu_ops}


@pytest.mark.parametrize("name, target", PAIRS)
def test_precheck_agrees_with_the_real_tool(converted, name, target):
    path = converted(name, int8=target != "gpu")
    tool = gpu_check(path) if target == "gpu" else check(path, target)
    assert tool.ok == CASES[name].verdicts[target], tool.format()
    precheck = check(path, target, toolchain=False)
    assert precheck.ok == tool.ok, f"pre-check:\n{precheck.format()}\n\nreal tool:\n{tool.format()}"
    if not tool.ok:
        # The pre-check refuses the operators the tool leaves to the CPU, naming each with the limit.
        assert {f.op for f in precheck.failures} == _tool_ops(tool), precheck.format()
        assert all(f.op in f.message or "tensor" in f.message for f in precheck.failures), precheck.format()
