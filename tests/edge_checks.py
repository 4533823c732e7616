"""The real toolchains' checks for tests; the GPU target skips, saying why, only where no Vulkan adapter exists."""

import pytest

from kerasseg.export import GpuUnavailableError, check, gpu_compile

_SKIP = ("no Vulkan adapter for LiteRT's GPU accelerator (install Mesa >= 25 lavapipe with `make vulkan`): {}")


def gpu_check(path, **kwargs):
    """``check(path, "gpu", **kwargs)``, skipping the test when LiteRT's GPU accelerator finds no adapter."""
    try:
        return check(path, "gpu", **kwargs)
    except GpuUnavailableError as e:
        pytest.skip(_SKIP.format(e))


def gpu_run(model, **kwargs):
    """``gpu_compile(model, run=True, **kwargs)`` (``enforce_f32=False`` runs at the GPU's default precision),
    skipping the test when LiteRT's GPU accelerator finds no adapter."""
    try:
        return gpu_compile(model, run=True, **kwargs)
    except GpuUnavailableError as e:
        pytest.skip(_SKIP.format(e))


def assert_deploys(path, npus=("ethos-u55-128",)):
    """The real toolchains on ``path``: LiteRT's GPU accelerator compiles it GPU-only, and Vela leaves no operator on
    the CPU of each Ethos-U configuration in ``npus``."""
    gpu = gpu_check(path)
    assert gpu.ok, gpu.summary()
    for target in npus:
        report = check(path, target)
        assert report.ok and report.vela.cpu_ops == [], (target, report.summary())
