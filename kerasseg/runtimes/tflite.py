"""Running a TFLite model: the LiteRT interpreter, its input / output details, and `TFLiteModel`.

`TFLiteModel` is a predict function (see `kerasseg.runtimes`): normalised float batches in, float scores or integer
labels out, with the export's input contract (pixels or normalised values) and quantisation handled from the
sidecar the export wrote next to the model (`read_sidecar`). It runs on LiteRT's interpreter (XNNPACK on the CPU),
optionally with an external delegate library (`external_delegate`), or through LiteRT's ``CompiledModel`` on a
hardware accelerator (`compile_model`, ``hardware="cpu"``, ``"gpu"`` or ``"gpu-fp32"``).

The device runtime ``tflite/runtime.py`` (``Segmenter``) takes the same ``delegate`` / ``delegate_options`` /
``hardware`` options with the same meaning. It is a single file that runs without kerasseg, and kerasseg does not
import it, so the two short loaders (`external_delegate`, `compile_model`) exist on both sides; keep them in step.
"""

from __future__ import annotations

import ctypes
import os
import sys

import numpy as np

from kerasseg.errors import GpuUnavailableError, InvalidFileError
from kerasseg.preprocessing import ModelMetadata
from kerasseg.runtimes.flatbuffer import model_bytes
from kerasseg.runtimes.inputs import image_batch

__all__ = ["TFLiteModel", "interpreter", "single_io", "quantization", "io_details", "sidecar_path", "read_sidecar",
           "HARDWARE", "external_delegate", "parse_delegate_options", "litert_options", "compile_model"]

# LiteRT hardware accelerators for `CompiledModel`; the GPU ones always keep the CPU as fallback, since LiteRT
# refuses a GPU-only compilation of a graph with operators the GPU cannot run. "gpu" computes at the accelerator's
# default precision (float16 allowed), "gpu-fp32" at full float precision (``GpuOptions(enforce_f32=True)``): a model
# whose labels hinge on near-ties, such as SegNet's max-unpooling switches, needs it (docs/edge_formulations.md).
HARDWARE = ("cpu", "gpu", "gpu-fp32")


def sidecar_path(path) -> str:
    """The sidecar JSON path of an exported file: ``model.tflite`` -> ``model.json``."""
    return os.path.splitext(os.fspath(path))[0] + ".json"


def read_sidecar(path) -> ModelMetadata:
    """Reads the `ModelMetadata` sidecar of an exported model (the model path or the JSON path itself)."""
    path = os.fspath(path)
    json_path = path if path.endswith(".json") else sidecar_path(path)
    if not os.path.isfile(json_path):
        raise FileNotFoundError(f"Expected a metadata sidecar next to the model. Received: no file {json_path!r}")
    try:
        with open(json_path, encoding="utf-8") as f:
            return ModelMetadata.from_json(f.read())
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidFileError(f"{e} (in the sidecar {json_path!r})") from None


def interpreter(data: bytes, num_threads: int | None = None, delegates: list | None = None):
    """An allocated LiteRT interpreter of the flatbuffer ``data``, with the given loaded delegates, if any."""
    from ai_edge_litert.interpreter import Interpreter

    result = Interpreter(model_content=data, num_threads=num_threads, experimental_delegates=delegates)
    result.allocate_tensors()
    return result


def external_delegate(library, options: dict | None = None):
    """Loads a LiteRT external delegate (e.g. a vendor NPU or GPU delegate library) with its options.

    Operators the delegate does not take stay on the CPU (LiteRT partitions the graph), so a model always runs.

    Args:
        library: path of the delegate's shared library (``.so``).
        options: the delegate's options, e.g. ``{"backend_type": "htp"}`` (values are passed as strings).

    Returns:
        The loaded delegate, for ``Interpreter(experimental_delegates=[...])``.

    Raises:
        FileNotFoundError: no such file.
        InvalidFileError: the library does not load as a LiteRT delegate (LiteRT's own reason is included).
    """
    from ai_edge_litert.interpreter import load_delegate

    library = os.fspath(library)
    if not os.path.isfile(library):
        raise FileNotFoundError(f"Expected an existing delegate library file. Received: delegate={library!r}")
    options = {str(k): str(v) for k, v in (options or {}).items()}
    expected = f"Expected a LiteRT external delegate library that loads with options {options}. Received: " \
               f"delegate={library!r}, which fails: "
    # LiteRT's Delegate opens the library the same way; a library that does not open or lacks the plugin entry
    # point would leave a half-built Delegate whose finaliser raises later, at the garbage collector's whim.
    try:
        entry = ctypes.PyDLL(library).tflite_plugin_create_delegate
    except (OSError, AttributeError) as e:
        raise InvalidFileError(f"{expected}{e}") from None
    del entry
    try:
        return load_delegate(library, options)
    except (OSError, ValueError, RuntimeError) as e:
        raise InvalidFileError(f"{expected}{e}") from None


def parse_delegate_options(items) -> dict:
    """``["key=value", ...]`` (the command line's repeated ``--delegate-option``) as a dict.

    Raises:
        ValueError: an item without ``=`` or without a key.
    """
    options = {}
    for item in items or []:
        key, sep, value = str(item).partition("=")
        if not sep or not key:
            raise ValueError(f"Expected delegate options as KEY=VALUE. Received: {item!r}")
        options[key] = value
    return options


def litert_options(hardware: str):
    """LiteRT ``Options`` of a `HARDWARE` name (``tflite/runtime.py`` has the same function: keep them in step)."""
    from ai_edge_litert.gpu_options import GpuOptions
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator
    from ai_edge_litert.options import Options

    if hardware == "cpu":
        return Options(hardware_accelerators=HardwareAccelerator.CPU)
    return Options(hardware_accelerators=HardwareAccelerator.GPU | HardwareAccelerator.CPU,
                   gpu_options=GpuOptions(enforce_f32=hardware == "gpu-fp32"))


def compile_model(data: bytes, hardware: str):
    """LiteRT's ``CompiledModel`` of the flatbuffer ``data`` on a hardware accelerator.

    Args:
        data: the ``.tflite`` bytes.
        hardware: ``"cpu"``, ``"gpu"`` (LiteRT's GPU accelerator, with the CPU as fallback for the operators the
            GPU does not take; half precision, LiteRT's default) or ``"gpu-fp32"`` (the same at full float precision).

    Returns:
        ``(compiled model, input buffers, output buffers, accelerator)``, ``accelerator`` saying in words where the
        model runs.

    Raises:
        ValueError: an unknown ``hardware``, or LiteRT does not compile the model for the CPU.
        GpuUnavailableError: ``"gpu"`` in a process that has imported TensorFlow (LiteRT's GPU accelerator crashes
            there, so it is not tried; run it in a process of its own, as `kerasseg.export.gpu_compile` does), or
            the accelerator does not start (no Vulkan adapter; LiteRT prints why on stderr).
    """
    if hardware not in HARDWARE:
        raise ValueError(f"Expected hardware to be one of {list(HARDWARE)}. Received: hardware={hardware!r}")
    if hardware != "cpu" and "tensorflow" in sys.modules:
        raise GpuUnavailableError(f"Expected hardware={hardware!r} in a process without TensorFlow: LiteRT's GPU "
                                  "accelerator crashes (segmentation fault) in a process that has imported TensorFlow, "
                                  "so it is not tried. Run the model in a separate process that imports only "
                                  "kerasseg.runtimes.tflite (or tflite/runtime.py). Received: TensorFlow imported")
    from ai_edge_litert.compiled_model import CompiledModel

    try:
        compiled = CompiledModel.from_buffer(data, options=litert_options(hardware))
        buffers = compiled.create_input_buffers(0), compiled.create_output_buffers(0)
    except RuntimeError as e:
        if hardware != "cpu":
            # With the CPU as fallback a model LiteRT reads always compiles; what fails is the accelerator itself.
            raise GpuUnavailableError(f"Expected LiteRT's GPU accelerator to start (a Vulkan adapter: a GPU driver, "
                                      f"or Mesa >= 25 lavapipe selected by VK_ICD_FILENAMES; LiteRT prints the reason "
                                      f"on stderr). Received: {str(e).strip()}") from None
        raise ValueError(f"Expected LiteRT to compile the model for hardware={hardware!r}. Received: {e}") from None
    fallback = "" if hardware == "cpu" or compiled.is_fully_accelerated() else \
        " (operators it does not take run on the CPU)"
    return compiled, buffers[0], buffers[1], f"LiteRT CompiledModel on {hardware.upper()}{fallback}"


def single_io(interpreter):
    """``(input detail, output detail)`` of a single-input, single-output interpreter."""
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(f"Expected a TFLite model with one input and one output. Received: {len(inputs)} inputs "
                         f"and {len(outputs)} outputs")
    return inputs[0], outputs[0]


def quantization(detail) -> list | None:
    """``[scale, zero_point]`` of an interpreter tensor detail, ``None`` for a float tensor."""
    scale, zero_point = detail["quantization"]
    return [float(scale), int(zero_point)] if scale else None


def io_details(model) -> dict:
    """Input / output dtype, shape and quantisation of a single-input, single-output TFLite model.

    Returns:
        dict with ``input_dtype``, ``output_dtype`` (numpy dtype names), ``input_shape``, ``output_shape`` and
        ``input_quantization`` / ``output_quantization`` as ``[scale, zero_point]`` or ``None`` for float tensors.
    """
    inp, out = single_io(interpreter(model_bytes(model)))
    return {
        "input_dtype": np.dtype(inp["dtype"]).name,
        "output_dtype": np.dtype(out["dtype"]).name,
        "input_shape": [int(d) for d in inp["shape"]],
        "output_shape": [int(d) for d in out["shape"]],
        "input_quantization": quantization(inp),
        "output_quantization": quantization(out),
    }


class TFLiteModel:
    """Runs a batch-1 TFLite segmentation model on normalised float batches, hiding the input contract and quantisation.

    A pixel-input model (``extra["export"]["input_format"] == "pixels"``) gets the batch turned back into pixels
    (rounded to uint8 for an int8 model, as a camera frame would be), so Keras and TFLite are scored on the same
    pipeline output whatever the contract.

    Args:
        model: path to a ``.tflite`` file, or its bytes.
        num_threads: interpreter CPU threads (LiteRT's default when ``None``).
        metadata: the export's `ModelMetadata`; by default the sidecar next to a model path, if any. Without
            metadata the model is taken to have normalised input.
        delegate: path of a LiteRT external delegate library (`external_delegate`) the interpreter runs the model
            on, operators it does not take staying on the CPU; ``None`` (default) runs on the CPU (XNNPACK).
        delegate_options: the delegate's options, e.g. ``{"backend_type": "htp"}``.
        hardware: ``None`` (default: the interpreter), or one of `HARDWARE` to run through LiteRT's
            ``CompiledModel`` on that accelerator (`compile_model`; the GPU ones keep the CPU as fallback and cannot
            run in a process that has imported TensorFlow). Not combined with ``delegate``.

    Raises:
        FileNotFoundError: a missing model file or delegate library.
        InvalidFileError: a delegate library that does not load (LiteRT's reason included).
        GpuUnavailableError: a GPU ``hardware`` where LiteRT's GPU accelerator cannot run (see `compile_model`).
        ValueError: a model that is not batch-1, single input and output; unknown or conflicting options.

    Attributes:
        accelerator: where the model runs, in words: ``"CPU (XNNPACK)"``, ``"delegate libX.so (operators it does
            not take run on the CPU)"`` or ``"LiteRT CompiledModel on GPU"`` and the like.
        hardware: the ``hardware`` option, ``None`` for the interpreter.
        input_shape: ``(H, W, C)`` of the model input.
        head: ``"labels"`` for an integer label-map output, ``"scores"`` for logits or probabilities.
        input_dtype, output_dtype: numpy dtypes of the model's input and output tensors.
        input_quantization, output_quantization: ``(scale, zero_point)`` or ``None``.
    """

    def __init__(self, model, *, num_threads: int | None = None, metadata: ModelMetadata | None = None,
                 delegate=None, delegate_options: dict | None = None, hardware: str | None = None):
        if hardware is not None and hardware not in HARDWARE:
            raise ValueError(f"Expected hardware to be one of {list(HARDWARE)} or None. Received: "
                             f"hardware={hardware!r}")
        if hardware is not None and delegate is not None:
            raise ValueError(f"Expected either a delegate or a hardware accelerator. Received: delegate={delegate!r} "
                             f"and hardware={hardware!r}")
        if metadata is None and not isinstance(model, (bytes, bytearray, memoryview)) and os.path.isfile(
                sidecar_path(model)):
            metadata = read_sidecar(model)
        export = (metadata.extra.get("export") or {}) if metadata is not None else {}
        self.input_format = export.get("input_format", "normalized")
        self._pixels = None
        if self.input_format == "pixels":
            self._pixels = (np.asarray(metadata.mean, np.float32), np.asarray(metadata.std, np.float32))
        data = model_bytes(model)
        delegates = [external_delegate(delegate, delegate_options)] if delegate is not None else None
        # With a hardware accelerator the interpreter (without delegates) still describes the tensors.
        self.interpreter = interpreter(data, num_threads, delegates)
        self._input, self._output = single_io(self.interpreter)
        self.hardware = hardware
        self.accelerator = (f"delegate {os.path.basename(os.fspath(delegate))} (operators it does not take run on the "
                            f"CPU)" if delegate is not None else "CPU (XNNPACK)")
        self._compiled = None
        if hardware is not None:
            compiled, inputs, outputs, self.accelerator = compile_model(data, hardware)
            self._compiled = compiled, inputs, outputs
        shape = tuple(int(d) for d in self._input["shape"])
        if len(shape) != 4 or shape[0] != 1:
            raise ValueError(f"Expected a batch-1 image model with input (1, H, W, C). Received: input shape "
                             f"{shape}")
        self.input_shape = shape[1:]
        self.input_dtype = np.dtype(self._input["dtype"])
        self.output_dtype = np.dtype(self._output["dtype"])
        self.input_quantization = quantization(self._input)
        self.output_quantization = quantization(self._output)
        integer_out = np.issubdtype(self.output_dtype, np.integer)
        self.head = "labels" if integer_out and self.output_quantization is None else "scores"

    def _quantize(self, image: np.ndarray) -> np.ndarray:
        if self.input_quantization is None:
            return image.astype(self.input_dtype, copy=False)
        scale, zero_point = self.input_quantization
        info = np.iinfo(self.input_dtype)
        q = np.round(image / np.float32(scale)) + zero_point
        return np.clip(q, info.min, info.max).astype(self.input_dtype)

    def _dequantize(self, raw: np.ndarray) -> np.ndarray:
        if self.output_quantization is None:
            return raw if self.head == "labels" else raw.astype(np.float32, copy=False)
        scale, zero_point = self.output_quantization
        return (raw.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)

    def _invoke(self, model_input: np.ndarray) -> np.ndarray:
        if self._compiled is None:
            self.interpreter.set_tensor(self._input["index"], model_input)
            self.interpreter.invoke()
            return self.interpreter.get_tensor(self._output["index"])
        compiled, inputs, outputs = self._compiled
        inputs[0].write(np.ascontiguousarray(model_input))
        compiled.run_by_index(0, inputs, outputs)
        shape = tuple(int(d) for d in self._output["shape"])
        return np.asarray(outputs[0].read(int(np.prod(shape)), self.output_dtype)).reshape(shape)

    def __call__(self, images) -> np.ndarray:
        """Runs the model image by image.

        Args:
            images: normalised float images ``(B, H, W, C)`` or one image ``(H, W, C)`` at the model input size.

        Returns:
            Float32 scores ``(B, H, W, K)`` (logits or probabilities, dequantised), or int32 labels ``(B, H, W)``
            for a label head; without the batch axis when a single image was given.
        """
        batch, single = image_batch(images, self.input_shape)
        results = []
        if self._pixels is not None:
            batch = batch * self._pixels[1] + self._pixels[0]
        for image in batch:
            results.append(self._dequantize(self._invoke(self._quantize(image[None])))[0])
        out = np.stack(results)
        return out[0] if single else out

    def predict_labels(self, images) -> np.ndarray:
        """Int32 label maps ``(B, H, W)`` (or ``(H, W)``) of normalised float images."""
        out = self(images)
        return out.astype(np.int32) if self.head == "labels" else np.argmax(out, axis=-1).astype(np.int32)
