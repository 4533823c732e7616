"""Reading PyTorch checkpoints (``.pth`` / ``.pt``) into numpy arrays without PyTorch and without executing them.

``torch.load`` unpickles the file, and a pickle can call any importable function: loading a checkpoint from the
internet is running its author's code. `read_torch_checkpoint` parses the same file with a restricted unpickler
that knows a short list of globals (tensor and parameter rebuilding, the storage types, ``OrderedDict``) and refuses
every other one with `UnsafeCheckpointError` before anything is called, in the spirit of ``torch.load(...,
weights_only=True)`` (which needs torch installed, a 1 GB dependency for reading a few megabytes of weights). The
tensor "rebuild" functions never run either: they are replaced by functions that record storage, offset, shape and
strides, and the arrays are cut out of the raw storage bytes with numpy afterwards.

Both serialisation formats of ``torch.save`` are read:

* the zip archive of torch >= 1.6 (``ARCHIVE/data.pkl`` plus one ``ARCHIVE/data/KEY`` file of raw bytes per
  storage, ``ARCHIVE/byteorder`` since torch 2.1), and
* the legacy stream of earlier versions (magic number, protocol, system info and the object pickles, then the list
  of storage keys and each storage as an 8-byte element count followed by its bytes), in which many papers' weights
  were published.

References:
    PyTorch ``torch/serialization.py`` and ``torch/_weights_only_unpickler.py`` (the format and the allow-list idea);
    Python ``pickle`` documentation, "Restricting Globals".
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np

__all__ = ["read_torch_checkpoint", "state_dict_of", "UnsafeCheckpointError", "CheckpointFormatError"]


class CheckpointFormatError(ValueError):
    """The file is not a complete PyTorch checkpoint (truncated, another format, inconsistent storages)."""


class UnsafeCheckpointError(CheckpointFormatError):
    """The checkpoint's pickle refers to a global outside the allow-list; nothing of it was called."""


# torch storage type name -> numpy dtype of its elements ("bfloat16" is widened to float32 after reading).
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_, "UntypedStorage": np.uint8,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class _StorageType:
    # Stands for a torch.*Storage class in the pickle: only its element type matters here.
    def __init__(self, name: str):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


class _Storage:
    # One storage of the file; `data` (a flat numpy array) is filled once the raw bytes are read.
    def __init__(self, key: str, dtype, numel: int | None):
        self.key, self.dtype, self.numel, self.data = key, dtype, numel, None


class _StorageView:
    # Legacy format: a storage that is a slice of another (view_metadata of old torch.save).
    def __init__(self, root: _Storage, offset: int, size: int):
        self.root, self.offset, self.size = root, offset, size


class _TensorRecord:
    # What a pickled tensor says about itself; made into an array by `_materialize`.
    def __init__(self, storage, offset, shape, stride):
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    # Stand-in for torch._utils._rebuild_tensor / _rebuild_tensor_v2 (requires_grad, hooks, metadata ignored).
    if not isinstance(storage, (_Storage, _StorageView)):
        raise CheckpointFormatError(f"Expected a tensor to be built on a storage of the checkpoint. "
                                    f"Received: {type(storage).__name__}")
    return _TensorRecord(storage, int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data, *_ignored):
    # Stand-in for torch._utils._rebuild_parameter(data, requires_grad, backward_hooks): a parameter is its data.
    return data


def _codecs_encode(text, encoding="latin1"):
    # Protocol-2 pickles store bytes objects as _codecs.encode(str, "latin1"); only that use is allowed.
    if not isinstance(text, str) or encoding != "latin1":
        raise UnsafeCheckpointError(f"Expected _codecs.encode(str, 'latin1') in the checkpoint. "
                                    f"Received: _codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


# (module, name) -> what the restricted unpickler returns for it. Everything else is refused.
_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("_codecs", "encode"): _codecs_encode,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
    # Tensors saved from a GPU by torch < 1.0 name the CUDA storage classes; the bytes are the same.
    **{("torch.cuda", name): _StorageType(name) for name in _STORAGE_DTYPES if name != "UntypedStorage"},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path, persistent_load):
        super().__init__(file, encoding="latin1")
        self._path = path
        self._persistent_load = persistent_load

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            allowed = sorted(f"{m}.{n}" for m, n in _ALLOWED_GLOBALS
                             if not m.startswith("torch") or m == "torch._utils")
            raise UnsafeCheckpointError(
                f"Refusing to load {self._path}: its pickle asks for the global {module}.{name}, which could run "
                f"code. Expected only tensors, storages and containers ({', '.join(allowed)}, torch.*Storage). "
                f"Received: {module}.{name}. Nothing from the file was executed; if you trust the file, re-save "
                f"its state dict with torch.save(model.state_dict(), PATH).") from None

    def persistent_load(self, pid):
        return self._persistent_load(pid)


def _storage_type(value, path) -> _StorageType:
    if isinstance(value, _StorageType):
        return value
    if isinstance(value, str) and value.endswith("Storage") and value in _STORAGE_DTYPES:  # very old files: names
        return _StorageType(value)
    raise CheckpointFormatError(f"Expected a torch storage type in {path}. Received: {value!r}")


def _from_bytes(raw: bytes, dtype, byteorder: str, what: str) -> np.ndarray:
    if dtype == "bfloat16":  # numpy has no bfloat16: its bits are the upper half of a float32
        bits = np.frombuffer(raw, dtype=np.dtype("uint16").newbyteorder(byteorder))
        return (bits.astype(np.uint32) << 16).view(np.float32)
    dt = np.dtype(dtype).newbyteorder(byteorder)
    if len(raw) % dt.itemsize:
        raise CheckpointFormatError(f"Expected {what} to hold whole {dt.name} elements. "
                                    f"Received: {len(raw)} bytes")
    return np.frombuffer(raw, dtype=dt).astype(np.dtype(dtype).newbyteorder("="))


def _materialize(record: _TensorRecord, path) -> np.ndarray:
    storage, base = record.storage, 0
    if isinstance(storage, _StorageView):
        storage, base = storage.root, storage.offset
    data = storage.data
    if data is None:
        raise CheckpointFormatError(f"Expected the data of storage {storage.key!r} in {path}. Received: a file "
                                    f"without it (truncated?)")
    shape, stride = record.shape, record.stride
    if len(shape) != len(stride) or any(s < 0 for s in shape) or any(s < 0 for s in stride):
        raise CheckpointFormatError(f"Expected matching non-negative shape and strides for a tensor of {path}. "
                                    f"Received: shape={shape}, stride={stride}")
    start = base + record.offset
    extent = 0 if 0 in shape else 1 + sum((n - 1) * s for n, s in zip(shape, stride))
    if start < 0 or start + extent > data.size:
        raise CheckpointFormatError(f"Expected tensor data within its storage {storage.key!r} of {path} "
                                    f"({data.size} elements). Received: offset {start}, extent {extent} "
                                    f"(truncated file?)")
    if extent == 0:
        return np.zeros(shape, dtype=data.dtype)
    flat = data[start:start + extent]
    view = np.lib.stride_tricks.as_strided(flat, shape=shape, strides=[s * flat.itemsize for s in stride],
                                           writeable=False)
    return np.array(view)  # contiguous copy: the storage may be shared by several tensors


def _materialize_all(obj, path):
    # Replaces every tensor record in (nested) containers by its array.
    if isinstance(obj, _TensorRecord):
        return _materialize(obj, path)
    if isinstance(obj, dict):
        out = collections.OrderedDict() if isinstance(obj, collections.OrderedDict) else {}
        for k, v in obj.items():
            out[k] = _materialize_all(v, path)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize_all(v, path) for v in obj)
    return obj


def _read_zip(path) -> object:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise CheckpointFormatError(f"Expected {path} to be a complete zip archive (the torch.save format). "
                                    f"Received: a damaged or truncated zip ({e})") from e
    with archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointFormatError(f"Expected one ARCHIVE/data.pkl in {path} (a torch.save zip archive). "
                                        f"Received: {len(pickles)} among {names[:8]}")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = "<"
        if prefix + "byteorder" in names:
            byteorder = ">" if archive.read(prefix + "byteorder").strip() == b"big" else "<"
        storages = {}

        def persistent_load(pid):
            if not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage":
                raise CheckpointFormatError(f"Expected ('storage', type, key, location, numel) persistent ids in "
                                            f"{path}. Received: {pid!r}")
            _, storage_type, key, _location, numel = pid
            key = str(key)
            if key not in storages:
                storages[key] = _Storage(key, _storage_type(storage_type, path).dtype, int(numel))
            return storages[key]

        try:
            with archive.open(pickles[0]) as f:
                obj = _RestrictedUnpickler(io.BytesIO(f.read()), path, persistent_load).load()
            for key, storage in storages.items():
                member = f"{prefix}data/{key}"
                if member not in names:
                    raise CheckpointFormatError(f"Expected the storage {member} in {path}. Received: an archive "
                                                f"without it")
                storage.data = _from_bytes(archive.read(member), storage.dtype, byteorder, member)
        except (zipfile.BadZipFile, EOFError, OSError) as e:  # zlib / CRC errors of a damaged member
            raise CheckpointFormatError(f"Expected {path} to be a complete zip archive. Received: {e}") from e
    return _materialize_all(obj, path)


def _read_legacy(path) -> object:
    with open(path, "rb") as f:
        def load_plain():
            return _RestrictedUnpickler(f, path, lambda pid: (_ for _ in ()).throw(
                CheckpointFormatError(f"Expected no persistent ids in the header of {path}. Received: {pid!r}"))
            ).load()

        magic = load_plain()
        if magic != _LEGACY_MAGIC:
            raise CheckpointFormatError(f"Expected a PyTorch checkpoint (a zip archive, or the legacy format "
                                        f"starting with magic number {_LEGACY_MAGIC:#x}). Received: {path} "
                                        f"starting with {magic!r}")
        protocol = load_plain()
        if protocol != _LEGACY_PROTOCOL:
            raise CheckpointFormatError(f"Expected legacy protocol {_LEGACY_PROTOCOL} in {path}. "
                                        f"Received: {protocol!r}")
        sys_info = load_plain()
        little = not isinstance(sys_info, dict) or sys_info.get("little_endian", True)
        storages = {}

        def persistent_load(pid):
            if isinstance(pid, tuple) and pid and pid[0] == "module":
                return None  # a pickled nn.Module's source text: never used
            if not isinstance(pid, tuple) or len(pid) != 6 or pid[0] != "storage":
                raise CheckpointFormatError(f"Expected ('storage', type, key, location, numel, view) persistent "
                                            f"ids in {path}. Received: {pid!r}")
            _, storage_type, key, _location, numel, view = pid
            key = str(key)
            if key not in storages:
                storages[key] = _Storage(key, _storage_type(storage_type, path).dtype, int(numel))
            if view is not None:
                _view_key, offset, size = view
                return _StorageView(storages[key], int(offset), int(size))
            return storages[key]

        obj = _RestrictedUnpickler(f, path, persistent_load).load()
        keys = load_plain()
        byteorder = "<" if little else ">"
        for key in keys:
            storage = storages.get(str(key))
            if storage is None:
                raise CheckpointFormatError(f"Expected storage {key!r} of {path} to be used by a tensor. "
                                            f"Received: an unknown key")
            header = f.read(8)
            if len(header) != 8:
                raise CheckpointFormatError(f"Expected the data of storage {key!r} in {path}. Received: end of "
                                            f"file (truncated?)")
            (numel,) = struct.unpack(byteorder + "q", header)
            itemsize = 2 if storage.dtype == "bfloat16" else np.dtype(storage.dtype).itemsize
            raw = f.read(numel * itemsize)
            if len(raw) != numel * itemsize:
                raise CheckpointFormatError(f"Expected {numel * itemsize} bytes of storage {key!r} in {path}. "
                                            f"Received: {len(raw)} (truncated file)")
            storage.data = _from_bytes(raw, storage.dtype, byteorder, f"storage {key!r}")
    return _materialize_all(obj, path)


def read_torch_checkpoint(path) -> object:
    """Reads a ``torch.save`` file into the same containers with numpy arrays in place of tensors.

    Args:
        path: a ``.pth`` / ``.pt`` file written by ``torch.save`` (zip archive or legacy format).

    Returns:
        The saved object (typically an ``OrderedDict`` state dict, or a dict holding one) with every tensor and
        parameter replaced by a C-contiguous numpy array (``bfloat16`` widened to ``float32``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafeCheckpointError: the pickle refers to a global outside the allow-list (nothing is executed).
        CheckpointFormatError: truncated or damaged file, or not a PyTorch checkpoint.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Expected an existing PyTorch checkpoint file. Received: path={path!r}")
    with open(path, "rb") as f:
        head = f.read(4)
    try:
        if head.startswith(b"PK"):
            return _read_zip(path)
        if head[:1] == b"\x80":  # a pickle protocol >= 2 opcode: the legacy stream
            return _read_legacy(path)
    except (pickle.UnpicklingError, EOFError, struct.error, ValueError, TypeError, AttributeError,
            IndexError, KeyError) as e:
        if isinstance(e, CheckpointFormatError):
            raise
        raise CheckpointFormatError(f"Expected a complete PyTorch checkpoint in {path}. Received: a file that "
                                    f"does not parse ({type(e).__name__}: {e}); truncated?") from e
    raise CheckpointFormatError(f"Expected a PyTorch checkpoint (zip archive or legacy pickle stream). "
                                f"Received: {path} starting with bytes {head!r}")


def state_dict_of(checkpoint, path="the checkpoint") -> dict:
    """The ``{name: array}`` state dict inside a loaded checkpoint.

    Accepts a state dict itself or a dict holding one under ``"state_dict"`` or ``"model"`` (the usual training
    checkpoints); other entries (epoch, optimizer state) are ignored.

    Raises:
        CheckpointFormatError: no mapping of names to arrays is found.
    """
    def is_state_dict(obj):
        return isinstance(obj, dict) and obj and all(isinstance(k, str) and isinstance(v, np.ndarray)
                                                     for k, v in obj.items())

    if is_state_dict(checkpoint):
        return dict(checkpoint)
    if isinstance(checkpoint, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if is_state_dict(checkpoint.get(key)):
                return dict(checkpoint[key])
    keys = list(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
    raise CheckpointFormatError(f"Expected {path} to hold a state dict (names -> tensors), directly or under "
                                f"'state_dict' / 'model'. Received: {keys}")
