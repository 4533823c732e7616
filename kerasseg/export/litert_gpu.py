"""Compiles (and optionally runs) a ``.tflite`` file on LiteRT's GPU accelerator alone, in a process of its own.

This file is a script: `kerasseg.export.gpu` runs it with the same Python interpreter as a subprocess, because LiteRT's
GPU accelerator (the WebGPU accelerator of the ``ai-edge-litert`` wheel) and TensorFlow crash when both are loaded in
one process. It imports numpy and ``ai_edge_litert`` only, never kerasseg or TensorFlow.

The model is compiled with ``HardwareAccelerator.GPU`` alone, so that compilation fails when an operator would fall
back to the CPU; the delegate prints which operators and why on stderr, which the caller parses. With ``--run`` one
input runs on the GPU (at full float precision with ``--enforce-f32``, through ``GpuOptions(enforce_f32=True)``) and
on LiteRT's CPU interpreter, and both outputs are saved for the caller to compare.

Usage::

    python litert_gpu.py MODEL.tflite RESULT.json [--run INPUT.npy OUTPUTS.npz] [--enforce-f32]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def _compile(path: str, enforce_f32: bool):
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.gpu_options import GpuOptions
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator
    from ai_edge_litert.options import Options

    options = Options(hardware_accelerators=HardwareAccelerator.GPU, gpu_options=GpuOptions(enforce_f32=enforce_f32))
    return CompiledModel.from_file(path, options=options)


def _run_gpu(model, image: np.ndarray) -> np.ndarray:
    inputs = model.create_input_buffers(0)
    outputs = model.create_output_buffers(0)
    inputs[0].write(image)
    model.run_by_index(0, inputs, outputs)
    (detail,) = model.get_output_tensor_details(next(iter(model.get_signature_list()))).values()
    shape = tuple(int(d) for d in detail["shape"])
    return outputs[0].read(int(np.prod(shape)), np.dtype(detail["dtype"])).reshape(shape)


def _run_cpu(path: str, image: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("result")
    parser.add_argument("--run", nargs=2, metavar=("INPUT", "OUTPUTS"))
    parser.add_argument("--enforce-f32", action="store_true")
    args = parser.parse_args(argv)
    result = {"compiled": False, "error": None, "compile_s": None, "run_s": None}
    start = time.perf_counter()
    try:
        model = _compile(args.model, args.enforce_f32)
    except RuntimeError as e:  # the accelerator's refusal: the operators and reasons are on stderr
        result["error"] = str(e)
    else:
        result["compiled"] = True
        result["compile_s"] = time.perf_counter() - start
        if args.run:
            image = np.load(args.run[0], allow_pickle=False)
            start = time.perf_counter()
            gpu = _run_gpu(model, image)
            result["run_s"] = time.perf_counter() - start
            np.savez(args.run[1], gpu=gpu, cpu=_run_cpu(args.model, image))
    sys.stderr.flush()
    with open(args.result, "w", encoding="utf-8") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
