"""Saving and loading ``.keras`` files that carry kerasseg's metadata, written atomically.

The metadata (preprocessing, classes, palette, ignore label; see `kerasseg.preprocessing.ModelMetadata`) is stored
as an extra ``kerasseg.json`` entry inside the ``.keras`` zip archive, which Keras itself ignores, so the file stays a
plain Keras model for anyone who does not use kerasseg.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import zipfile

from kerasseg.errors import InvalidFileError, NotAModelError
from kerasseg.preprocessing import ModelMetadata

__all__ = ["save_model", "load_model", "read_metadata", "atomic_path", "resolve_model"]

METADATA_ENTRY = "kerasseg.json"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yields a temporary path in the destination folder and renames it onto ``path`` only on success.

    A crash or an exception leaves either the previous file or nothing, never a half-written file.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    suffix = suffix or os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=f".tmp{suffix}", dir=folder)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        # mkstemp creates the file readable by its owner only; give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


WEIGHTS_ENTRY = "model.weights.h5"
WEIGHTS_DTYPES = ("float32", "float16")


def _store_float16(archive: str):
    # Rewrites the archive's weights file with every float32 dataset stored as float16 (groups, attributes and
    # other datasets copied as they are).
    import io

    import h5py
    import numpy as np

    with zipfile.ZipFile(archive) as zf:
        members = [(info, zf.read(info.filename)) for info in zf.infolist()]
    weights = next(data for info, data in members if info.filename == WEIGHTS_ENTRY)
    out = io.BytesIO()
    with h5py.File(io.BytesIO(weights), "r") as src, h5py.File(out, "w") as dst:
        dst.attrs.update(src.attrs)

        def copy(name, obj):
            if isinstance(obj, h5py.Dataset):
                data = obj[()]
                dst.create_dataset(name, data=data.astype(np.float16) if data.dtype == np.float32 else data)
            else:
                dst.require_group(name)
            dst[name].attrs.update(obj.attrs)

        src.visititems(copy)
    with zipfile.ZipFile(archive, "w") as zf:
        for info, data in members:
            zf.writestr(info, out.getvalue() if info.filename == WEIGHTS_ENTRY else data)


def save_model(model, path, metadata: ModelMetadata | None = None, *, weights_dtype: str = "float32") -> str:
    """Saves ``model`` to a ``.keras`` file atomically, with its kerasseg metadata.

    Args:
        model: a Keras 3 model.
        path: destination, must end in ``.keras``.
        metadata: defaults to ``model.kerasseg_metadata`` (set by `kerasseg.build_model`).
        weights_dtype: ``"float32"``, or ``"float16"`` to store the float32 weights as float16 in the archive (half
            the size; values rounded to float16). Keras casts them back to the variables' dtype on loading, so the
            file is still a float32 model; Keras itself only stores variables in their own dtype, hence this option.

    Returns:
        The path written.
    """
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(f"Expected a path ending in '.keras'. Received: path={path!r}")
    if weights_dtype not in WEIGHTS_DTYPES:
        raise ValueError(f"Expected weights_dtype to be one of {WEIGHTS_DTYPES}. "
                         f"Received: weights_dtype={weights_dtype!r}")
    metadata = metadata if metadata is not None else getattr(model, "kerasseg_metadata", None)
    with atomic_path(path) as tmp:
        model.save(tmp)
        if weights_dtype == "float16":
            _store_float16(tmp)
        if metadata is not None:
            with zipfile.ZipFile(tmp, "a") as zf:
                zf.writestr(METADATA_ENTRY, metadata.to_json())
    return path


def read_metadata(path) -> ModelMetadata | None:
    """The metadata stored in a ``.keras`` file, or ``None`` for a file saved without kerasseg."""
    path = os.fspath(path)
    try:
        with zipfile.ZipFile(path) as zf:
            if METADATA_ENTRY not in zf.namelist():
                return None
            text = zf.read(METADATA_ENTRY)
    except zipfile.BadZipFile:
        raise InvalidFileError(f"Expected a .keras model file (a zip archive). Received: path={path!r}, "
                               f"which is not a zip archive") from None
    try:
        return ModelMetadata.from_json(text.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidFileError(f"{e} (in the {METADATA_ENTRY} entry of {path!r})") from None


def load_model(path, *, compile: bool = False, safe_mode: bool = True):
    """Loads a ``.keras`` model (``safe_mode=True`` by default) and attaches its kerasseg metadata."""
    import keras

    import kerasseg.layers  # noqa: F401  (registers the custom layers for deserialisation)

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Expected an existing .keras model file. Received: path={path!r}")
    metadata = read_metadata(path)
    model = keras.saving.load_model(path, compile=compile, safe_mode=safe_mode)
    if metadata is not None:
        model.kerasseg_metadata = metadata
    return model


def resolve_model(model, arg: str = "model"):
    """The Keras 3 model a public function was given: a model as it is, or a ``.keras`` path loaded with `load_model`.

    Raises:
        NotAModelError: (a ``TypeError``) anything else, including the quantization-aware ``tf_keras`` models of
            `kerasseg.export.quantize_aware`, which have their own exporter (the message names it).
        FileNotFoundError: a ``.keras`` path that does not exist.
    """
    import keras

    if isinstance(model, keras.Model):
        return model
    if isinstance(model, (str, os.PathLike)) and os.fspath(model).endswith(".keras"):
        return load_model(model)
    if type(model).__module__.startswith("tf_keras"):
        raise NotAModelError(
            f"Expected {arg} to be a Keras 3 model or a .keras path. Received: {arg}={getattr(model, 'name', model)!r}"
            f", a tf_keras model (the quantization-aware copy made by kerasseg.export.quantize_aware?). Export a "
            f"quantization-aware model with kerasseg.export.qat.qat_to_tflite(qat_model, path, "
            f"representative_data=...)")
    raise NotAModelError(f"Expected {arg} to be a Keras 3 model or a path to a .keras file. Received: "
                         f"{arg}={model!r:.80} of type {type(model).__name__}")


def write_with_sidecar(path, data: bytes, metadata: ModelMetadata) -> str:
    """Writes an exported model's bytes and its ``ModelMetadata`` sidecar JSON, both atomically.

    The sidecar goes to ``os.path.splitext(path)[0] + ".json"``. Both temporary files are complete before either is
    renamed, and the sidecar lands first, so that a model file is never newer than its description.

    Args:
        path: destination of the model (``.tflite``, ``.onnx``...).
        data: the model bytes.
        metadata: the record written as the sidecar.

    Returns:
        ``path``.
    """
    path = os.fspath(path)
    json_path = os.path.splitext(path)[0] + ".json"
    # Nested context managers exit inner first: the sidecar's rename happens before the model's.
    with atomic_path(path) as tmp_model, atomic_path(json_path, suffix=".json") as tmp_json:
        with open(tmp_model, "wb") as f:
            f.write(data)
        with open(tmp_json, "w", encoding="utf-8") as f:
            f.write(metadata.to_json())
    return path
