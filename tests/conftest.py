import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PYTHONHASHSEED", "0")

from tests.paths import ROOT  # noqa: E402
# tools/ and tflite/ are script folders, not installed packages: make them importable for the tests.
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A tiny synthetic dataset (8 train / 4 val scenes of 64x128) in the plain folder layout; returns its root."""
    from kerasseg.data.synthetic import write_dataset

    return write_dataset(tmp_path_factory.mktemp("synthetic") / "data", num_train=8, num_val=4, height=64, width=128,
                         seed=0)
