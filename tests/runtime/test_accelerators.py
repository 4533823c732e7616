"""`TFLiteModel` on LiteRT's accelerators: external delegates, ``CompiledModel`` on the CPU and on the GPU."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import keras

from kerasseg.errors import GpuUnavailableError, InvalidFileError
from kerasseg.export.gpu import vulkan_environment
from kerasseg.runtimes import TFLiteModel, parse_delegate_options

from tests.paths import ROOT

# Runs TFLiteModel in a process without TensorFlow (the GPU accelerator crashes next to it) and prints the result.
_GPU_SCRIPT = """
import json, sys
import numpy as np
from kerasseg.runtimes.tflite import GpuUnavailableError, TFLiteModel
x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
try:
    gpu = TFLiteModel(sys.argv[1], hardware=sys.argv[2])
except GpuUnavailableError as e:
    print(json.dumps({"error": str(e)}))
else:
    cpu = TFLiteModel(sys.argv[1])
    print(json.dumps({"accelerator": gpu.accelerator, "max_abs_diff": float(np.abs(gpu(x) - cpu(x)).max()),
                      "tensorflow": "tensorflow" in sys.modules}))
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A one-convolution float model, 8x8x3 -> 8x8x4 (a conversion of a few operators: cheap)."""
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 3), batch_size=1), keras.layers.Conv2D(4, 3, padding="same")])
    path = tmp_path_factory.mktemp("accelerators") / "tiny.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


def _images():
    return np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)


def _run_without_tensorflow(path, env, hardware="gpu"):
    done = subprocess.run([sys.executable, "-c", _GPU_SCRIPT, os.fspath(path), hardware], capture_output=True,
                          text=True, timeout=300, cwd=ROOT, env={**env, "PYTHONPATH": ROOT})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_interpreter_is_the_default_and_says_so(tiny):
    lite = TFLiteModel(tiny)
    assert lite.hardware is None and lite.accelerator == "CPU (XNNPACK)"


def test_compiled_model_on_the_cpu_equals_the_interpreter(tiny):
    compiled = TFLiteModel(tiny, hardware="cpu")
    assert compiled.accelerator == "LiteRT CompiledModel on CPU" and compiled.hardware == "cpu"
    np.testing.assert_allclose(compiled(_images()), TFLiteModel(tiny)(_images()), atol=1e-5)
    np.testing.assert_array_equal(compiled.predict_labels(_images()[0]), TFLiteModel(tiny).predict_labels(_images()[0]))


def test_missing_delegate_library_is_named(tiny, tmp_path):
    missing = tmp_path / "libmissing_delegate.so"
    with pytest.raises(FileNotFoundError, match="libmissing_delegate.so"):
        TFLiteModel(tiny, delegate=missing)


def test_a_library_that_is_no_delegate_is_a_typed_error_with_litert_reason(tiny, tmp_path):
    fake = tmp_path / "libfake_delegate.so"
    fake.write_bytes(b"not a shared library")
    with pytest.raises(InvalidFileError, match=r"libfake_delegate\.so.*which fails: \S+") as info:
        TFLiteModel(tiny, delegate=fake, delegate_options={"backend_type": "htp"})
    assert "backend_type" in str(info.value)


def test_conflicting_or_unknown_options_are_rejected(tiny):
    with pytest.raises(ValueError, match="either a delegate or a hardware"):
        TFLiteModel(tiny, delegate="lib.so", hardware="cpu")
    with pytest.raises(ValueError, match="hardware=.npu."):
        TFLiteModel(tiny, hardware="npu")
    assert parse_delegate_options(["backend_type=htp", "a=b=c"]) == {"backend_type": "htp", "a": "b=c"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_delegate_options(["novalue"])


def test_gpu_in_a_tensorflow_process_is_refused_with_the_reason(tiny):
    assert "tensorflow" in sys.modules  # the fixture converted with it
    with pytest.raises(GpuUnavailableError, match="process without TensorFlow.*segmentation fault"):
        TFLiteModel(tiny, hardware="gpu")


def test_gpu_runs_in_a_process_without_tensorflow(tiny):
    env = vulkan_environment()
    if not env.get("VK_ICD_FILENAMES"):
        pytest.skip("no Vulkan driver for LiteRT's GPU accelerator (install Mesa >= 25 lavapipe: `make vulkan`)")
    result = _run_without_tensorflow(tiny, env)
    if "error" in result:
        pytest.skip(f"no Vulkan adapter for LiteRT's GPU accelerator: {result['error']}")
    assert result["accelerator"].startswith("LiteRT CompiledModel on GPU") and not result["tensorflow"]
    assert 1e-5 < result["max_abs_diff"] < 1e-2  # half precision, LiteRT's default on the GPU
    full = _run_without_tensorflow(tiny, env, "gpu-fp32")
    assert full["accelerator"].startswith("LiteRT CompiledModel on GPU-FP32") and full["max_abs_diff"] < 1e-5, full


def test_gpu_without_an_adapter_is_gpu_unavailable(tiny):
    result = _run_without_tensorflow(tiny, {**os.environ, "VK_ICD_FILENAMES": os.devnull})
    assert "GPU accelerator to start" in result["error"], result


def test_parity_tool_refuses_the_gpu_before_anything_runs(tmp_path, capsys):
    from kerasseg.cli.parity import main

    with pytest.raises(SystemExit) as info:
        main([str(tmp_path / "m.keras"), "--hardware", "gpu"])
    assert info.value.code == 2 and "has loaded TensorFlow" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path / "m.keras"), "--delegate", "lib.so", "--hardware", "cpu"])
    assert "either --delegate or --hardware" in capsys.readouterr().err
