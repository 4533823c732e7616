"""Running an ONNX model: an onnxruntime CPU session and `ONNXModel`, a predict function (see `kerasseg.runtimes`)."""

from __future__ import annotations

import numpy as np

from kerasseg.runtimes.inputs import file_bytes, image_batch

__all__ = ["ONNXModel", "session"]


def session(data: bytes, num_threads: int | None = None):
    """An onnxruntime CPU ``InferenceSession`` of the ONNX model ``data`` with all graph optimisations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if num_threads is not None:
        options.intra_op_num_threads = int(num_threads)
        options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])


class ONNXModel:
    """Runs a batch-1 ONNX segmentation model in onnxruntime on normalised float batches.

    Args:
        model: path to a ``.onnx`` file, or its bytes.
        num_threads: onnxruntime intra-op threads (its default when ``None``).

    Attributes:
        input_shape: ``(H, W, C)`` of the model input.
        head: ``"labels"`` for an integer label-map output, ``"scores"`` otherwise.
    """

    def __init__(self, model, *, num_threads: int | None = None):
        data, _ = file_bytes(model, ".onnx")
        try:
            self.session = session(data, num_threads)
        except Exception as e:  # onnxruntime raises its own exception types for unreadable models
            raise ValueError(f"Expected an ONNX model onnxruntime can load. Received: {type(e).__name__}: {e}") from e
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"Expected an ONNX model with one input and one output. Received: {len(inputs)} inputs "
                             f"and {len(outputs)} outputs")
        shape = inputs[0].shape
        if len(shape) != 4 or shape[0] != 1 or not all(isinstance(d, int) for d in shape):
            raise ValueError(f"Expected a static batch-1 input (1, H, W, C). Received: input shape {shape}")
        self._input = inputs[0].name
        self.input_shape = tuple(int(d) for d in shape[1:])
        self.head = "scores" if "float" in outputs[0].type else "labels"

    def __call__(self, images) -> np.ndarray:
        """Float32 scores ``(B, H, W, K)`` (or labels ``(B, H, W)``) of normalised images, one image at a time."""
        batch, single = image_batch(images, self.input_shape)
        out = np.concatenate([self.session.run(None, {self._input: image[None]})[0] for image in batch])
        return out[0] if single else out
