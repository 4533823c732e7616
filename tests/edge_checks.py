"""The GPU target's check for tests: a skip, saying why, only where no Vulkan adapter can be created."""

import pytest

from kerasseg.export import GpuUnavailableError, check


def gpu_check(path, **kwargs):
    """``check(path, "gpu", **kwargs)``, skipping the test when LiteRT's GPU accelerator finds no adapter."""
    try:
        return check(path, "gpu", **kwargs)
    except GpuUnavailableError as e:
        pytest.skip(f"no Vulkan adapter for LiteRT's GPU accelerator (install Mesa >= 25 lavapipe with "
                    f"`make vulkan`): {e}")
