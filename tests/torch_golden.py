"""Deterministic inputs and weights shared by the PyTorch golden-data tests and `tools/make_torch_golden.py`.

numpy only, so that the generator (run once in an environment with torch and the reference implementations) and the
tests (no torch) draw the same arrays: every array comes from ``numpy.random.default_rng`` seeded by a fixed number
and the CRC-32 of its name.
"""

from __future__ import annotations

import os
import pickle
import zipfile
import zlib

import numpy as np

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "torch")

# ERFNet golden case: the authors' Net with random weights, 8 classes, one 48x64 image.
ERFNET_NUM_CLASSES = 8
ERFNET_INPUT_NCHW = (1, 3, 48, 64)
# EfficientNet-Lite0 golden case: the installed ImageNet weights, one 96x128 image; features after block index 4
# (the stride-8 endpoint) and 15 (stride 32).
LITE0_INPUT_NCHW = (1, 3, 96, 128)
LITE0_ENDPOINT_BLOCKS = {"stride8": 4, "stride32": 15}


def _rng(name: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def golden_input(shape_nchw, seed: int = 0) -> np.ndarray:
    """A standard-normal image batch in PyTorch's NCHW layout (float32)."""
    return _rng("input", seed).standard_normal(shape_nchw).astype(np.float32)


def random_state_dict(spec, seed: int = 0) -> dict:
    """Random weights for a list of ``(name, shape, dtype)``: He-scaled kernels, plausible batch-norm statistics.

    Batch-norm vectors get ``weight`` near 1, small ``bias`` and ``running_mean`` and a ``running_var`` in
    [0.5, 2]; ``num_batches_tracked`` is 0. Kernel scales keep a 40-layer network's activations finite.
    """
    state = {}
    for name, shape, dtype in spec:
        rng, shape = _rng(name, seed), tuple(shape)
        if dtype == "int64":
            state[name] = np.zeros(shape, np.int64)
        elif name.endswith("running_var"):
            state[name] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
        elif len(shape) == 1 and name.endswith("weight"):
            state[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        elif len(shape) == 1:
            state[name] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            fan_in = int(np.prod(shape[1:]))
            state[name] = (rng.standard_normal(shape) * np.sqrt(1.0 / fan_in)).astype(np.float32)
    return state


def pickle_ops(value) -> bytes:
    # The pickle opcodes of a plain value (int, str, bool, tuple of ints), without protocol header and STOP.
    return pickle.dumps(value, protocol=2)[2:-1]


def write_torch_zip(path, state: dict, prefix: str = "archive"):
    """Writes ``{name: float32 or int64 array}`` in the zip layout of ``torch.save`` (protocol 2, as torch writes it).

    For tests that need a large checkpoint file (a whole ERFNet) that cannot be committed; the reader itself is
    tested on files written by torch (``tiny_zip.pth``, ``tiny_legacy.pth``).
    """
    body, storages = [b"\x80\x02}("], {}
    storage_types = {np.dtype(np.float32): b"FloatStorage", np.dtype(np.int64): b"LongStorage"}
    for i, (name, array) in enumerate(state.items()):
        array = np.require(array, requirements="C")
        storages[str(i)] = array.tobytes()
        strides = tuple(int(s // array.itemsize) for s in array.strides)
        persistent_id = (b"(" + pickle_ops("storage") + b"ctorch\n" + storage_types[array.dtype] + b"\n"
                         + pickle_ops(str(i)) + pickle_ops("cpu") + pickle_ops(int(array.size)) + b"tQ")
        arguments = (persistent_id + pickle_ops(0) + pickle_ops(tuple(int(d) for d in array.shape))
                     + pickle_ops(strides) + pickle_ops(False) + b"ccollections\nOrderedDict\n)R")
        body.append(pickle_ops(name) + b"ctorch._utils\n_rebuild_tensor_v2\n(" + arguments + b"tR")
    body.append(b"u.")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{prefix}/data.pkl", b"".join(body))
        for key, raw in storages.items():
            zf.writestr(f"{prefix}/data/{key}", raw)
        zf.writestr(f"{prefix}/version", "3\n")
