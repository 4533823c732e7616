"""Running a TFLite model: the LiteRT interpreter, its input / output details, and `TFLiteModel`.

`TFLiteModel` is a predict function (see `kerasseg.runtimes`): normalised float batches in, float scores or integer
labels out, with the export's input contract (pixels or normalised values) and quantisation handled from the
sidecar the export wrote next to the model (`read_sidecar`).
"""

from __future__ import annotations

import os

import numpy as np

from kerasseg.errors import InvalidFileError
from kerasseg.preprocessing import ModelMetadata
from kerasseg.runtimes.flatbuffer import model_bytes
from kerasseg.runtimes.inputs import image_batch

__all__ = ["TFLiteModel", "interpreter", "single_io", "quantization", "io_details", "sidecar_path", "read_sidecar"]


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


def interpreter(data: bytes, num_threads: int | None = None):
    """An allocated LiteRT interpreter of the flatbuffer ``data``."""
    from ai_edge_litert.interpreter import Interpreter

    result = Interpreter(model_content=data, num_threads=num_threads)
    result.allocate_tensors()
    return result


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

    Attributes:
        input_shape: ``(H, W, C)`` of the model input.
        head: ``"labels"`` for an integer label-map output, ``"scores"`` for logits or probabilities.
        input_dtype, output_dtype: numpy dtypes of the model's input and output tensors.
        input_quantization, output_quantization: ``(scale, zero_point)`` or ``None``.
    """

    def __init__(self, model, *, num_threads: int | None = None, metadata: ModelMetadata | None = None):
        if metadata is None and not isinstance(model, (bytes, bytearray, memoryview)) and os.path.isfile(
                sidecar_path(model)):
            metadata = read_sidecar(model)
        export = (metadata.extra.get("export") or {}) if metadata is not None else {}
        self.input_format = export.get("input_format", "normalized")
        self._pixels = None
        if self.input_format == "pixels":
            self._pixels = (np.asarray(metadata.mean, np.float32), np.asarray(metadata.std, np.float32))
        self.interpreter = interpreter(model_bytes(model), num_threads)
        self._input, self._output = single_io(self.interpreter)
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
            self.interpreter.set_tensor(self._input["index"], self._quantize(image[None]))
            self.interpreter.invoke()
            results.append(self._dequantize(self.interpreter.get_tensor(self._output["index"]))[0])
        out = np.stack(results)
        return out[0] if single else out

    def predict_labels(self, images) -> np.ndarray:
        """Int32 label maps ``(B, H, W)`` (or ``(H, W)``) of normalised float images."""
        out = self(images)
        return out.astype(np.int32) if self.head == "labels" else np.argmax(out, axis=-1).astype(np.int32)
