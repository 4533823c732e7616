"""Reading the weights of a saved ``.keras`` file without building its model (for comparing runs)."""

import zipfile

import numpy as np


def saved_weights(path) -> list:
    """Every weight array in ``path``'s ``model.weights.h5``, in the file's order."""
    import h5py

    with zipfile.ZipFile(path) as zf, zf.open("model.weights.h5") as raw, h5py.File(raw, "r") as h5:
        arrays = []
        h5.visit(lambda name: arrays.append(np.asarray(h5[name])) if isinstance(h5[name], h5py.Dataset) else None)
    assert arrays, f"no weights in {path}"
    return arrays
