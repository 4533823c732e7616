"""Standard TFLite Model Metadata for exported segmentation models: the file describes itself.

Every ``.tflite`` that kerasseg writes carries a ``TFLITE_METADATA`` buffer in the layout of the TFLite metadata
schema (``metadata_schema.fbs``, file identifier ``M001``; https://ai.google.dev/edge/litert/models/metadata), which
MediaPipe Tasks and the TFLite Support libraries read:

- the input tensor: an RGB image, its ``NormalizationOptions`` (mean 0, std 1 when the normalisation is inside the
  graph, the pixel contract; the per-channel mean / std for the older normalised-input contract) and its value range;
- the output tensor: a segmentation mask whose class axis is labelled by an associated ``labels.txt``
  (``TENSOR_AXIS_LABELS``), one class name a line;
- kerasseg's own record (`kerasseg.preprocessing.ModelMetadata` as JSON: preprocessing, palette, ignore label,
  output head, export mode, input contract) as ``CustomMetadata`` named ``"kerasseg"``.

Associated files travel as a zip archive appended to the flatbuffer, the packing the TFLite metadata populator uses:
flatbuffer readers ignore the trailing bytes and zip readers find the archive from the end.

Why not MediaPipe's ``metadata_writers``: in the 1.2.3 wheel importing it fails (``No module named
'mediapipe.tasks.cc'``, imported for the parser version string), and MediaPipe needs ``absl-py~=2.3`` where the pinned
``tensorflow-model-optimization`` needs ``absl-py~=1.2``, so one environment cannot hold both. LiteRT ships the model
schema and ``flatbuffer_utils`` but not the metadata schema's generated code. The metadata schema is small and stable,
so the buffer is built
here with the ``flatbuffers`` builder (the library TFLite's own generated code uses) and attached with LiteRT's
``flatbuffer_utils`` (``ai_edge_litert.tools``); MediaPipe's ImageSegmenter reading the result is the test. The
reader is ``tflite/metadata.py``, on the device side (no TensorFlow), which the device runtime uses.
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np

from kerasseg.preprocessing import ModelMetadata

__all__ = ["METADATA_BUFFER_NAME", "RECORD_NAME", "LABEL_FILE", "metadata_buffer", "embed_metadata"]

METADATA_BUFFER_NAME = "TFLITE_METADATA"
RECORD_NAME = "kerasseg"
LABEL_FILE = "labels.txt"
_FILE_IDENTIFIER = b"M001"
# The oldest metadata parser that reads every field written here (CustomMetadata arrived in 1.2.1).
_MIN_PARSER_VERSION = "1.2.1"

# metadata_schema.fbs enum values.
_IMAGE_PROPERTIES = 2            # ContentProperties.ImageProperties
_NORMALIZATION_OPTIONS = 1       # ProcessUnitOptions.NormalizationOptions
_RGB, _GRAYSCALE = 1, 2          # ColorSpaceType
_TENSOR_AXIS_LABELS = 2          # AssociatedFileType


def _strings(builder, values) -> list[int]:
    return [builder.CreateString(v) for v in values]


def _table(builder, fields: dict) -> int:
    """Ends a table whose ``fields`` map slot index -> ``("offset" | "int8" | "uint8" | "int32", value)``."""
    builder.StartObject(max(fields) + 1)
    for slot, (kind, value) in sorted(fields.items()):
        if kind == "offset":
            builder.PrependUOffsetTRelativeSlot(slot, value, 0)
        elif kind == "int8":
            builder.PrependInt8Slot(slot, value, 0)
        elif kind == "uint8":
            builder.PrependUint8Slot(slot, value, 0)
        else:
            builder.PrependInt32Slot(slot, value, 0)
    return builder.EndObject()


def _vector(builder, offsets: list[int]) -> int:
    builder.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()


def _float_vector(builder, values) -> int:
    return builder.CreateNumpyVector(np.asarray(values, np.float32))


def _stats(builder, low: float, high: float) -> int:
    # Stats: max (0), min (1).
    high, low = _float_vector(builder, [high]), _float_vector(builder, [low])
    return _table(builder, {0: ("offset", high), 1: ("offset", low)})


def _input_tensor(builder, mean, std, low: float, high: float) -> int:
    name, description = _strings(builder, ["image", "RGB camera frame; see the kerasseg record for the contract"])
    # ImageProperties: color_space (0). Content: content_properties_type (0), content_properties (1).
    image = _table(builder, {0: ("int8", _RGB)})
    content = _table(builder, {0: ("uint8", _IMAGE_PROPERTIES), 1: ("offset", image)})
    # NormalizationOptions: mean (0), std (1). ProcessUnit: options_type (0), options (1).
    norm = _table(builder, {0: ("offset", _float_vector(builder, mean)), 1: ("offset", _float_vector(builder, std))})
    unit = _table(builder, {0: ("uint8", _NORMALIZATION_OPTIONS), 1: ("offset", norm)})
    # TensorMetadata: name (0), description (1), content (3), process_units (4), stats (5).
    return _table(builder, {0: ("offset", name), 1: ("offset", description), 3: ("offset", content),
                            4: ("offset", _vector(builder, [unit])), 5: ("offset", _stats(builder, low, high))})


def _output_tensor(builder, description: str, labelled: bool) -> int:
    name, text = _strings(builder, ["segmentation_masks", description])
    image = _table(builder, {0: ("int8", _GRAYSCALE)})
    # ValueRange: min (0), max (1): the dimensions that span the mask (height, width).
    value_range = _table(builder, {0: ("int32", 1), 1: ("int32", 2)})
    content = _table(builder, {0: ("uint8", _IMAGE_PROPERTIES), 1: ("offset", image), 2: ("offset", value_range)})
    fields = {0: ("offset", name), 1: ("offset", text), 3: ("offset", content)}
    if labelled:
        file_name, file_text = _strings(builder, [LABEL_FILE, "class names, one a line, in class-index order"])
        # AssociatedFile: name (0), description (1), type (2).
        label_file = _table(builder, {0: ("offset", file_name), 1: ("offset", file_text),
                                      2: ("int8", _TENSOR_AXIS_LABELS)})
        fields[6] = ("offset", _vector(builder, [label_file]))
    return _table(builder, fields)


_HEAD_DESCRIPTIONS = {
    "logits": "per-pixel class logits (H, W, classes); the argmax is the label map",
    "probabilities": "per-pixel class probabilities (H, W, classes), softmax",
    "labels": "per-pixel class index (H, W), an in-graph argmax",
}


def metadata_buffer(meta: ModelMetadata) -> bytes:
    """The ``TFLITE_METADATA`` flatbuffer of an export described by ``meta`` (with ``extra["export"]`` filled in).

    The input normalisation written is the one a client must apply: none (mean 0, std 1) for the pixel contract,
    ``meta.mean`` / ``meta.std`` for the normalised-input contract.
    """
    import flatbuffers

    export = meta.extra.get("export") or {}
    pixels = export.get("input_format", "normalized") == "pixels"
    channels = int(meta.input_shape[-1]) if meta.input_shape else 3
    if pixels:
        mean, std, low, high = [0.0] * channels, [1.0] * channels, 0.0, 255.0
    else:
        mean, std = [float(v) for v in meta.mean], [float(v) for v in meta.std]
        low, high = min((0.0 - m) / s for m, s in zip(mean, std)), max((255.0 - m) / s for m, s in zip(mean, std))
    head = export.get("output", "logits")
    builder = flatbuffers.Builder(1024)
    record_name = builder.CreateString(RECORD_NAME)
    record_data = builder.CreateByteVector(meta.to_json().encode("utf-8"))
    # CustomMetadata: name (0), data (1).
    record = _table(builder, {0: ("offset", record_name), 1: ("offset", record_data)})
    inputs = _vector(builder, [_input_tensor(builder, mean, std, low, high)])
    outputs = _vector(builder, [_output_tensor(builder, _HEAD_DESCRIPTIONS.get(head, head),
                                               bool(meta.class_names))])
    name = builder.CreateString(meta.model_name)
    # SubGraphMetadata: name (0), input_tensor_metadata (2), output_tensor_metadata (3), custom_metadata (9).
    subgraph = _table(builder, {0: ("offset", name), 2: ("offset", inputs), 3: ("offset", outputs),
                                9: ("offset", _vector(builder, [record]))})
    model_name, description, version, parser = _strings(builder, [
        meta.model_name, f"kerasseg semantic segmentation ({meta.num_classes} classes, {head} head)",
        str(export.get("mode", "")), _MIN_PARSER_VERSION])
    # ModelMetadata: name (0), description (1), version (2), subgraph_metadata (3), min_parser_version (7).
    root = _table(builder, {0: ("offset", model_name), 1: ("offset", description), 2: ("offset", version),
                            3: ("offset", _vector(builder, [subgraph])), 7: ("offset", parser)})
    builder.Finish(root, _FILE_IDENTIFIER)
    return bytes(builder.Output())


def _flatbuffer_end(data: bytes) -> bytes:
    """``data`` without an appended associated-file archive (a rebuilt flatbuffer gets a fresh one)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            starts = [info.header_offset for info in archive.infolist()]
    except zipfile.BadZipFile:
        return data
    return data[:min(starts)] if starts else data


def embed_metadata(model, meta: ModelMetadata) -> bytes:
    """``model`` (a .tflite flatbuffer's bytes) with ``meta`` embedded as standard TFLite metadata.

    An existing ``TFLITE_METADATA`` entry and associated files are replaced. Labels go to ``labels.txt`` in the
    appended archive when ``meta.class_names`` is set.
    """
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    data = _flatbuffer_end(bytes(model))
    tree = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    entries = [m for m in (tree.metadata or []) if m.name not in (METADATA_BUFFER_NAME, METADATA_BUFFER_NAME.encode())]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(metadata_buffer(meta), np.uint8)
    tree.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_BUFFER_NAME
    entry.buffer = len(tree.buffers) - 1
    tree.metadata = entries + [entry]
    out = io.BytesIO(bytes(flatbuffer_utils.convert_object_to_bytearray(tree)))
    if meta.class_names:
        out.seek(0, io.SEEK_END)
        # Mode "a" on a non-zip stream appends an archive whose offsets count from the file start, like the
        # metadata populator's; stored (not deflated) so readers can map the files in place.
        with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as archive:
            archive.writestr(LABEL_FILE, "\n".join(meta.class_names) + "\n")
    return out.getvalue()

