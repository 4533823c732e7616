"""Reads the standard TFLite Model Metadata embedded in a ``.tflite`` file: LiteRT (``ai_edge_litert``) only.

kerasseg writes (``kerasseg/export/metadata.py``) a ``TFLITE_METADATA`` buffer in the layout of the TFLite metadata
schema (``metadata_schema.fbs``, identifier ``M001``) with kerasseg's own record as ``CustomMetadata`` named
``"kerasseg"``, and the class names as an associated ``labels.txt`` in a zip archive appended to the flatbuffer.
LiteRT ships the model schema (``schema_py_generated``) but not the metadata schema's generated code, and its Python
interpreter exposes neither, so the few tables read here are walked with the ``flatbuffers`` runtime LiteRT already
depends on, by their schema slot numbers.

Copy this file to the device beside ``runtime.py``.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile

__all__ = ["METADATA_BUFFER_NAME", "RECORD_NAME", "LABEL_FILE", "read_record", "read_labels",
           "read_normalization"]

METADATA_BUFFER_NAME = "TFLITE_METADATA"
RECORD_NAME = "kerasseg"
LABEL_FILE = "labels.txt"
_FILE_IDENTIFIER = b"M001"


def _metadata_table(data: bytes, source: str):
    """The root ``ModelMetadata`` table of the ``TFLITE_METADATA`` buffer of ``data``, or ``None``."""
    from ai_edge_litert import schema_py_generated as schema
    from flatbuffers.table import Table

    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ValueError(f"Expected a TFLite flatbuffer (file identifier 'TFL3'). Received: {source}, which is not "
                         f"one")
    try:
        raw = _metadata_buffer(schema.Model.GetRootAs(data, 0), data)
    except (struct.error, IndexError, TypeError, AttributeError) as e:
        # The flatbuffer reader follows offsets without bounds checks: a truncated file fails as one of these.
        raise ValueError(f"Expected a whole TFLite flatbuffer. Received: {source}, which is truncated or corrupt "
                         f"({type(e).__name__}: {e})") from None
    if raw is not None:
        if len(raw) < 8 or raw[4:8] != _FILE_IDENTIFIER:
            raise ValueError(f"Expected the {METADATA_BUFFER_NAME} buffer of {source} to be a TFLite metadata "
                             f"flatbuffer (identifier {_FILE_IDENTIFIER.decode()}). Received: identifier "
                             f"{bytes(raw[4:8])!r}")
        return Table(bytearray(raw), int.from_bytes(raw[:4], "little"))
    return None


def _metadata_buffer(root, data: bytes) -> bytes | None:
    """The bytes of the ``TFLITE_METADATA`` buffer of a parsed model, or ``None``."""
    for i in range(root.MetadataLength()):
        entry = root.Metadata(i)
        if (entry.Name() or b"").decode("utf-8", "replace") != METADATA_BUFFER_NAME:
            continue
        buffer = root.Buffers(entry.Buffer())
        # Files over 2 GB keep their buffers after the flatbuffer (offset / size); smaller ones inline.
        offset, size = buffer.Offset(), buffer.Size()
        return bytes(data[offset:offset + size]) if offset > 1 else buffer.DataAsNumpy().tobytes()
    return None


def _child(table, slot: int):
    from flatbuffers.table import Table

    offset = table.Offset(4 + 2 * slot)
    return Table(table.Bytes, table.Indirect(offset + table.Pos)) if offset else None


def _children(table, slot: int) -> list:
    from flatbuffers.table import Table

    offset = table.Offset(4 + 2 * slot)
    if not offset:
        return []
    start = table.Vector(offset)
    return [Table(table.Bytes, table.Indirect(start + 4 * i)) for i in range(table.VectorLen(offset))]


def _text(table, slot: int) -> str | None:
    offset = table.Offset(4 + 2 * slot)
    return table.String(offset + table.Pos).decode("utf-8") if offset else None


def _vector_bytes(table, slot: int, itemsize: int = 1) -> bytes:
    offset = table.Offset(4 + 2 * slot)
    if not offset:
        return b""
    start = table.Vector(offset)
    return bytes(table.Bytes[start:start + itemsize * table.VectorLen(offset)])


def _subgraph(data: bytes, source: str):
    root = _metadata_table(data, source)
    # ModelMetadata.subgraph_metadata is slot 3.
    subgraphs = _children(root, 3) if root is not None else []
    return subgraphs[0] if subgraphs else None


def read_record(data: bytes, source: str = "the model") -> dict | None:
    """kerasseg's record (a dict of the sidecar's fields) embedded in a ``.tflite`` file's bytes, or ``None``.

    Raises:
        ValueError: not a TFLite file, a metadata block that is not a TFLite metadata flatbuffer, or a record that
            is not a JSON object.
    """
    subgraph = _subgraph(data, source)
    if subgraph is None:
        return None
    # SubGraphMetadata.custom_metadata is slot 9; CustomMetadata: name (0), data (1).
    for custom in _children(subgraph, 9):
        if _text(custom, 0) == RECORD_NAME:
            try:
                record = json.loads(_vector_bytes(custom, 1).decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as e:
                raise ValueError(f"Expected the embedded {RECORD_NAME!r} metadata of {source} to be JSON. "
                                 f"Received: {type(e).__name__}: {e}") from None
            if not isinstance(record, dict):
                raise ValueError(f"Expected the embedded {RECORD_NAME!r} metadata of {source} to be a JSON object. "
                                 f"Received: {type(record).__name__}")
            return record
    return None


def read_normalization(data: bytes, source: str = "the model") -> tuple[list, list] | None:
    """``(mean, std)`` of the input tensor's ``NormalizationOptions``, what a generic client applies, or ``None``."""
    import numpy as np
    from flatbuffers.number_types import Uint8Flags

    subgraph = _subgraph(data, source)
    # SubGraphMetadata.input_tensor_metadata (2) -> TensorMetadata.process_units (4) -> ProcessUnit options_type (0),
    # options (1) -> NormalizationOptions mean (0), std (1).
    for tensor in (_children(subgraph, 2)[:1] if subgraph is not None else []):
        for unit in _children(tensor, 4):
            if unit.GetSlot(4, 0, Uint8Flags) == 1:  # NormalizationOptions
                options = _child(unit, 1)
                mean = np.frombuffer(_vector_bytes(options, 0, 4), "<f4").tolist()
                std = np.frombuffer(_vector_bytes(options, 1, 4), "<f4").tolist()
                return mean, std
    return None


def read_labels(data: bytes) -> list[str] | None:
    """The class names of the associated ``labels.txt`` (appended zip archive), or ``None`` without one."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            if LABEL_FILE not in archive.namelist():
                return None
            text = archive.read(LABEL_FILE).decode("utf-8")
    except zipfile.BadZipFile:
        return None
    return [line for line in text.splitlines() if line]
