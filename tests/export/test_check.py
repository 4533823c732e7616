"""Edge-compatibility report (kerasseg.export.check in kerasseg.export.compat, tools/check_tflite.py) and export with
a target."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasseg
from kerasseg.export import EdgeCompatibilityError, check, read_sidecar, to_tflite
from kerasseg.export.tflite import convert_to_tflite
from tests.plain_conversion import plain_conversion

H, W = 32, 64


@pytest.fixture(scope="module")
def erfnet():
    keras.utils.set_random_seed(5)
    return kerasseg.build_model("erfnet", 4, input_shape=(H, W, 3))


@pytest.fixture(scope="module")
def calibration():
    return np.random.default_rng(0).normal(size=(4, H, W, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def converted(erfnet, calibration):
    """ERFNet flatbuffers: every mode with the logits head, and fp32 / int8 label heads."""
    out = {mode: convert_to_tflite(erfnet, mode, representative_data=calibration, num_calibration_samples=4,
                                   verbose=False) for mode in ("fp32", "fp16", "dynamic", "int8")}
    out["labels"] = convert_to_tflite(erfnet, "fp32", output="labels", verbose=False)
    out["labels_uint8"] = convert_to_tflite(erfnet, "fp32", output="labels", label_dtype="uint8", verbose=False)
    return out


def _rules(report):
    return {f.rule for f in report.failures}


def test_fp32_logits_pass_cpu_and_gpu_but_not_npu(converted):
    data = converted["fp32"]
    assert check(data, "cpu").ok and check(data, "gpu", toolchain=False).ok
    npu = check(data, "npu", toolchain=False)
    assert not npu.ok and _rules(npu) == {"integer"}
    assert not npu.is_integer and "image" in npu.float_tensors
    # The report's own figures.
    assert npu.ops["CONV_2D"] > 40 and npu.ops["TRANSPOSE_CONV"] == 3 and npu.custom_ops == []
    assert npu.dynamic_tensors == [] and npu.inputs[0]["shape"] == [1, H, W, 3]
    assert npu.inputs[0]["dtype"] == "float32" and npu.inputs[0]["quantization"] is None


def test_int8_passes_every_target(converted):
    for target in ("cpu", "gpu", "npu"):
        report = check(converted["int8"], target, toolchain=False)
        assert report.ok, report.format()
    report = check(converted["int8"], "npu", toolchain=False)
    assert report.is_integer and report.float_tensors == []
    assert report.inputs[0]["dtype"] == "uint8" and report.inputs[0]["quantization"] == [1.0, 0]
    assert "target npu: PASS" in report.format()


def test_int8_weights_are_quantised_per_channel(converted):
    from ai_edge_litert import schema_py_generated as schema

    root = schema.Model.GetRootAs(converted["int8"], 0)
    graph = root.Subgraphs(0)
    conv = schema.BuiltinOperator.CONV_2D
    checked = 0
    for o in range(graph.OperatorsLength()):
        op = graph.Operators(o)
        code = root.OperatorCodes(op.OpcodeIndex())
        if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) != conv:
            continue
        weights = graph.Tensors(int(op.Inputs(1)))
        quant = weights.Quantization()
        out_channels = int(weights.ShapeAsNumpy()[0])
        # One scale per output channel, along the weights' first axis.
        assert quant.ScaleLength() == out_channels and quant.QuantizedDimension() == 0
        assert weights.Type() == schema.TensorType.INT8
        checked += 1
    assert checked > 40


def test_fp16_weights_count_as_constants_for_the_gpu(converted):
    report = check(converted["fp16"], "gpu", toolchain=False)
    # float16 weights reach the convolutions through DEQUANTIZE, which the delegate folds into its weights.
    assert report.ops["DEQUANTIZE"] > 0
    assert report.ok, report.format()


def test_dynamic_range_model_passes_the_gpu_rules(converted):
    # LiteRT 2.3's GPU accelerator dequantises the int8 weights of hybrid kernels and compiles ERFNet's
    # dynamic-range export GPU-only (test_precheck_vs_tools.py holds the rules to it on a tiny model).
    assert check(converted["dynamic"], "cpu").ok
    report = check(converted["dynamic"], "gpu", toolchain=False)
    assert report.ok, report.format()


def test_label_heads_pass_the_gpu_rules(converted):
    # LiteRT 2.3's GPU accelerator runs ARG_MAX and the uint8 head's CAST from int32 to uint8.
    for head in ("labels", "labels_uint8"):
        assert check(converted[head], "cpu").ok
        report = check(converted[head], "gpu", toolchain=False)
        assert report.ok and report.ops["ARG_MAX"] == 1, report.format()
    uint8 = check(converted["labels_uint8"], "gpu", toolchain=False)
    assert uint8.ops["CAST"] == 1 and uint8.outputs[0]["dtype"] == "uint8"
    assert "[  ok   ] TFLite GPU delegate rules" in uint8.format() and "target gpu: PASS" in uint8.format()


def test_cast_the_delegate_lacks_fails_the_gpu():
    inputs = keras.Input((8, 8, 4))
    out = keras.layers.Lambda(lambda x: tf.cast(tf.cast(x, tf.int32), tf.int8), output_shape=(8, 8, 4))(inputs)
    report = check(convert_to_tflite(keras.Model(inputs, out), verbose=False, input_format="normalized"), "gpu",
                   toolchain=False)
    assert any(f.op == "CAST" and "CAST from INT32 to INT8" in f.message for f in report.failures), report.format()
    text = report.format()
    assert "[ FAIL  ] TFLite GPU delegate rules" in text and "target gpu: FAIL" in text and "CAST" in report.summary()


def test_fused_activation_in_transposed_conv_fails_the_gpu(tmp_path):
    inputs = keras.Input((8, 8, 4))
    # With batch norm and ReLU after it, TensorFlow's converter fuses the activation into TRANSPOSE_CONV.
    up = keras.layers.ReLU()(keras.layers.BatchNormalization()(
        keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same")(inputs)))
    path = plain_conversion(keras.Model(inputs, up), tmp_path / "relu.tflite")
    [failure] = check(path, "gpu", toolchain=False).failures
    assert failure.op == "TRANSPOSE_CONV" and "fused RELU is operator version 4" in failure.message
    assert "Max version supported: 3. Requested version 4." in failure.message
    # kerasseg's export keeps the activation apart.
    assert check(to_tflite(keras.Model(inputs, up), tmp_path / "kept.tflite", verbose=False,
                           input_format="normalized"), "gpu", toolchain=False).ok


def test_flex_operators_fail_every_target(tmp_path):
    class StringLength(keras.layers.Layer):
        def call(self, x):
            return x + tf.cast(tf.strings.length(tf.strings.as_string(tf.reduce_sum(x))), x.dtype)

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, StringLength()(keras.layers.Conv2D(2, 1)(inputs)))

    path = plain_conversion(model, tmp_path / "flex.tflite", flex=True)
    for target in ("cpu", "gpu", "npu"):
        report = check(path, target, toolchain=False)
        assert "builtin" in _rules(report)
    report = check(path, "cpu")
    assert report.custom_ops == ["FlexAsString", "FlexStringLength"] and report.source == str(path)
    assert any("Flex (TensorFlow) operator 'FlexAsString'" in f.message for f in report.failures)


def test_dynamic_shapes_fail_the_static_rule():
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3, padding="same")(inputs))

    report = check(plain_conversion(model), "cpu")
    assert not report.ok and _rules(report) == {"static"}
    assert report.dynamic_tensors and all("dynamic shape" in f.message for f in report.failures)


def test_depthwise_multiplier_on_several_channels_fails_the_gpu():
    inputs = keras.Input((8, 8, 3))
    deep = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(inputs)
    model = keras.Model(inputs, deep)
    report = check(convert_to_tflite(model, verbose=False), "gpu", toolchain=False)
    [failure] = report.failures
    assert failure.op == "DEPTHWISE_CONV_2D" and "depth multiplier 2 on 3 input channels" in failure.message
    # One input channel with a multiplier is fine.
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.DepthwiseConv2D(3, depth_multiplier=4, padding="same")(inputs))
    assert check(convert_to_tflite(model, verbose=False, input_format="normalized"), "gpu", toolchain=False).ok


def _reverse_model() -> bytes:
    # REVERSE_V2 is a builtin operator without a GPU kernel: the CPU target passes, the GPU one does not.
    inputs = keras.Input((8, 8, 4))
    out = keras.layers.Lambda(lambda x: tf.reverse(x, axis=[2]), output_shape=(8, 8, 4))(inputs)
    return convert_to_tflite(keras.Model(inputs, out), verbose=False, input_format="normalized")


def test_unsupported_operator_fails_the_gpu():
    data = _reverse_model()
    assert check(data, "cpu").ok
    report = check(data, "gpu", toolchain=False)
    assert [(f.op, f.message) for f in report.failures] == [
        ("REVERSE_V2", "REVERSE_V2 is not supported by the GPU delegate")]


def _int8(model, tmp_path, name):
    return plain_conversion(model, tmp_path / f"{name}.tflite", int8=True)


def test_ethos_u_rules_per_generation(tmp_path):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x4 = _int8(keras.Model(inputs, keras.layers.UpSampling2D(4, interpolation="bilinear")(x)), tmp_path, "x4")
    x3 = _int8(keras.Model(inputs, keras.layers.UpSampling2D(3, interpolation="bilinear")(x)), tmp_path, "x3")
    stride4 = _int8(keras.Model(inputs, keras.layers.Conv2DTranspose(4, 3, strides=4, padding="same")(x)), tmp_path,
                    "stride4")
    s2d = _int8(keras.Model(inputs, keras.layers.Lambda(lambda t: tf.nn.space_to_depth(t, 2))(x)), tmp_path, "s2d")

    [failure] = check(x4, "ethos-u55-128", toolchain=False).failures
    assert failure.rule == "ethos-u" and failure.op == "RESIZE_BILINEAR"
    assert "8x8 -> 32x32: scale factor 4 on Ethos-U55" in failure.message and "by 2 only" in failure.message
    assert "unsupported scale-factor=4" in failure.message
    assert check(x4, "ethos-u85-256", toolchain=False).ok and check(x4, "npu", toolchain=False).ok
    assert "Ethos-U65" in check(x4, "ethos-u65-256", toolchain=False).failures[0].message
    [failure] = check(x3, "ethos-u85-256", toolchain=False).failures
    assert "8x8 -> 24x24: width scale factor 3 on Ethos-U85" in failure.message
    assert "integer powers of two" in failure.message

    [failure] = check(stride4, "ethos-u55-128", toolchain=False).failures
    assert failure.op == "TRANSPOSE_CONV" and "stride out of range: (4,4)" in failure.message
    assert check(stride4, "ethos-u85-256", toolchain=False).ok

    for target in ("ethos-u55-128", "ethos-u85-256"):
        [failure] = check(s2d, target, toolchain=False).failures
        assert failure.op == "SPACE_TO_DEPTH" and "'Unsupported opType'" in failure.message
    # The Ethos-U rules are context for the CPU and GPU targets, and listed as not run there.
    report = check(x4, "ethos-u55-128", toolchain=False)
    assert "[ FAIL  ] Ethos-U rules of Vela 5.2" in report.format()
    assert not any(f.rule == "ethos-u" for f in check(x4, "cpu").findings)
    assert "Ethos-U rules" not in check(x4, "cpu").format()


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"Expected target to be one of \['cpu', 'gpu', 'npu', 'ethos-u55-32'"):
        check(b"whatever", "tpu")
    bogus = tmp_path / "bogus.tflite"
    bogus.write_bytes(b"not a model at all")
    with pytest.raises(ValueError, match="TFL3"):
        check(bogus)
    with pytest.raises(FileNotFoundError, match="missing.tflite"):
        check(tmp_path / "missing.tflite")


def test_export_with_a_target_refuses_and_writes_nothing(erfnet, tmp_path):
    # A float model for an NPU: refused by the pre-check, whatever allow_cpu_fallback says.
    with pytest.raises(EdgeCompatibilityError, match="float tensor") as info:
        to_tflite(erfnet, tmp_path / "float.tflite", target="npu", allow_cpu_fallback=True)
    assert isinstance(info.value, ValueError) and not info.value.report.ok
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="Expected target to be one of"):
        to_tflite(erfnet, tmp_path / "m.tflite", target="edge")
    assert os.listdir(tmp_path) == []

    path = to_tflite(erfnet, tmp_path / "logits.tflite", target="gpu", allow_cpu_fallback=True)
    record = read_sidecar(path).extra["export"]
    assert record["target"] == "gpu" and record["allow_cpu_fallback"] is True
    # The label head is fine for a CPU.
    to_tflite(erfnet, tmp_path / "labels_cpu.tflite", output="labels", target="cpu")


def test_check_cli(converted, tmp_path, capsys):
    from kerasseg.cli import check_tflite

    good, bad = tmp_path / "good.tflite", tmp_path / "reverse.tflite"
    good.write_bytes(converted["int8"])
    bad.write_bytes(_reverse_model())
    assert check_tflite.main([str(good), "--target", "npu"]) == 0
    out = capsys.readouterr().out
    assert "target npu: PASS" in out and "operators" in out and "float tensors 0" in out

    report_path = tmp_path / "report.json"
    assert check_tflite.main([str(good), str(bad), "--target", "gpu", "--precheck-only",
                              "--json", str(report_path)]) == 1
    out = capsys.readouterr().out
    assert "REVERSE_V2" in out and "target gpu: FAIL" in out
    reports = json.loads(report_path.read_text())
    assert [r["ok"] for r in reports] == [True, False]
    assert reports[1]["failures"][0]["op"] == "REVERSE_V2"

    assert check_tflite.main([str(bad), "--target", "cpu", "--quiet"]) == 0
    assert "compatible with target 'cpu'" in capsys.readouterr().out
    assert check_tflite.main([str(tmp_path / "missing.tflite")]) == 2
    assert "missing.tflite" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        check_tflite.main([str(good), "--target", "tpu"])
