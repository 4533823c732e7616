"""LiteRT's own GPU accelerator as the judge of a ``.tflite`` file: a GPU-only compilation, and optionally one run.

The ``ai-edge-litert`` wheel ships a GPU accelerator (WebGPU over Vulkan). Compiled with
``Options(hardware_accelerators=HardwareAccelerator.GPU)`` alone, ``CompiledModel.from_file`` fails when any
operator would fall back to the CPU, and the delegate prints each such operator with its reason on stderr
("``TRANSPOSE_CONV: Max version supported: 3. Requested version 4.``"). `gpu_compile` reads that list;
``CompiledModel.is_fully_accelerated()`` is not used because it returned True with operators on the CPU.

The accelerator runs in a subprocess (``kerasseg/export/litert_gpu.py``): loading it into a process that has
imported TensorFlow crashed. Without a GPU it runs on Mesa's software Vulkan driver (lavapipe, Mesa >= 25), which
``make test`` installs (``.ci/install-vulkan-driver``); ``VK_ICD_FILENAMES`` selects the driver, and when it is not
set the ICD JSON that script writes into the virtual environment (``<sys.prefix>/share/vulkan/icd.d/lvp_icd.json``)
is used.

With ``run=True`` one input runs on the GPU and on LiteRT's CPU interpreter, and the report gives their argmax
agreement and largest absolute difference. The GPU runs at full float precision (``GpuOptions(enforce_f32=True)``)
unless ``enforce_f32=False`` asks for the accelerator's default, float16 storage and arithmetic: there a random-weight
SegNet's argmax agrees with the CPU on 59 % of pixels only, because its max-unpooling moves each value to the
maximum of a pre-pool map that float16 computes differently (``docs/edge_formulations.md``). The first run compiles
shaders, which on the software driver takes 15-80 s.

Example::

    report = gpu_compile("erfnet_fp16.tflite", run=True)
    assert report.ok, report.problems()
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

from kerasseg.errors import GpuUnavailableError
from kerasseg.runtimes.flatbuffer import model_bytes
from kerasseg.runtimes.tflite import io_details

__all__ = ["GpuFallback", "GpuReport", "GpuUnavailableError", "gpu_compile", "vulkan_environment"]

_FALLBACK_HEADER = "Following operations are not supported by GPU delegate:"
_PARTITION = re.compile(r"(\d+) operations will run on the GPU, and the remaining (\d+) operations will run on the CPU")
_ADAPTER = re.compile(r"Selected adapter: ([^\n]*)")
_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "litert_gpu.py")


@dataclasses.dataclass(frozen=True)
class GpuFallback:
    """An operator the GPU delegate leaves to the CPU, with the delegate's reason (empty where it gave none:
    DEQUANTIZE of float16 weights that feed an operator which falls back, for instance)."""

    op: str
    reason: str


@dataclasses.dataclass
class GpuReport:
    """A GPU-only compilation on LiteRT's GPU accelerator (see the module docstring).

    Attributes:
        compiled: the model compiled with every operator on the GPU.
        fallbacks: the operator types that fall back to the CPU, with the delegate's reasons.
        ops_on_gpu, ops_on_cpu: the delegate's partition counts, where it printed them (only when something falls
            back); ``None`` otherwise.
        adapter: the Vulkan adapter the accelerator selected.
        error: the accelerator's error message when it did not compile the model.
        compile_s: seconds the compilation took.
        run: with ``run=True`` and a compiled model: ``{"argmax_agreement", "max_abs_diff", "enforce_f32",
            "run_s"}`` comparing the GPU's output with the CPU interpreter's on one input.
        litert_version: the ``ai-edge-litert`` version.
    """

    compiled: bool
    fallbacks: list
    ops_on_gpu: int | None
    ops_on_cpu: int | None
    adapter: str | None
    error: str | None
    compile_s: float | None
    run: dict | None
    litert_version: str

    @property
    def ok(self) -> bool:
        return self.compiled and not self.fallbacks

    def problems(self) -> list:
        """Why the model does not run GPU-only, one line per operator type (empty when `ok`)."""
        lines = [f"{f.op} runs on the CPU: {f.reason or 'the delegate gave no reason'}" for f in self.fallbacks]
        if not self.compiled and not lines:
            lines.append(f"GPU-only compilation failed: {self.error}")
        return lines

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["ok"] = self.ok
        return out

    def format(self) -> str:
        lines = [f"LiteRT {self.litert_version} GPU accelerator ({self.adapter or 'no adapter'}): "
                 + ("GPU-only compilation OK" if self.ok else "operators fall back to the CPU")]
        if self.ops_on_gpu is not None:
            lines.append(f"  operators on the GPU {self.ops_on_gpu} / {self.ops_on_gpu + self.ops_on_cpu}")
        lines.extend(f"  - {line}" for line in self.problems())
        if self.run is not None:
            lines.append(f"  GPU vs CPU interpreter (enforce_f32={self.run['enforce_f32']}): argmax agreement "
                         f"{100 * self.run['argmax_agreement']:.3f} %, max |diff| {self.run['max_abs_diff']:.3g}")
        return "\n".join(lines)


def vulkan_environment() -> dict:
    """The environment for the accelerator's process: ``VK_ICD_FILENAMES`` as set, else the project's ICD JSON."""
    env = dict(os.environ)
    if not env.get("VK_ICD_FILENAMES"):
        icd = os.path.join(sys.prefix, "share", "vulkan", "icd.d", "lvp_icd.json")
        if os.path.isfile(icd):
            env["VK_ICD_FILENAMES"] = icd
    return env


def _fallbacks(stderr: str) -> list:
    found: dict = {}
    lines = stderr.splitlines()
    for start, line in enumerate(lines):
        if not line.rstrip().endswith(_FALLBACK_HEADER):
            continue
        for entry in lines[start + 1:]:
            if _PARTITION.search(entry) or ":" not in entry:
                break
            op, reason = entry.split(":", 1)
            if not re.fullmatch(r"[A-Z0-9_]+", op.strip()):
                break
            found.setdefault(op.strip(), reason.strip())
    return [GpuFallback(op, reason) for op, reason in found.items()]


def _compare(outputs: dict) -> dict:
    gpu, cpu = outputs["gpu"], outputs["cpu"]
    if gpu.shape != cpu.shape:
        raise RuntimeError(f"Expected the GPU output to have the CPU output's shape {cpu.shape}. "
                           f"Received: {gpu.shape}")
    agreement = float(np.mean(np.argmax(gpu, -1) == np.argmax(cpu, -1))) if gpu.ndim == 4 else float(
        np.mean(gpu == cpu))
    return {"argmax_agreement": agreement,
            "max_abs_diff": float(np.max(np.abs(gpu.astype(np.float64) - cpu.astype(np.float64))))}


def _random_input(data: bytes) -> np.ndarray:

    details = io_details(data)
    shape, dtype = tuple(details["input_shape"]), np.dtype(details["input_dtype"])
    rng = np.random.default_rng(0)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    return rng.normal(size=shape).astype(dtype)


def gpu_compile(model, *, run: bool = False, run_input=None, enforce_f32: bool = True,
                timeout: float = 600) -> GpuReport:
    """Compiles a ``.tflite`` model GPU-only on LiteRT's GPU accelerator, in a subprocess.

    Args:
        model: path to a ``.tflite`` file, or its bytes.
        run: also run one input on the GPU and on the CPU interpreter and compare them.
        run_input: that input, of the model's input shape and dtype; ``None`` draws a seeded random one.
        enforce_f32: run at full float precision (``GpuOptions(enforce_f32=True)``); ``False`` is the accelerator's
            default, which stores tensors and computes in float16. Applies to the compilation too.
        timeout: seconds before the subprocess is stopped.

    Returns:
        A `GpuReport`.

    Raises:
        GpuUnavailableError: no Vulkan adapter could be created (the subprocess's stderr says why).
        TypeError: ``enforce_f32`` is not a bool.
        ValueError: a ``run_input`` of the wrong shape or dtype.
    """
    from importlib.metadata import version

    if not isinstance(enforce_f32, bool):
        raise TypeError(f"Expected enforce_f32 to be a bool (True: full float precision, False: the GPU's default, "
                        f"which allows float16 arithmetic). Received: enforce_f32={enforce_f32!r}")
    data = model_bytes(model)
    if run and run_input is not None:
        details = io_details(data)
        run_input = np.asarray(run_input)
        if list(run_input.shape) != list(details["input_shape"]) or run_input.dtype != details["input_dtype"]:
            raise ValueError(f"Expected run_input of shape {details['input_shape']} and dtype "
                             f"{details['input_dtype']}. Received: run_input of shape {list(run_input.shape)} and "
                             f"dtype {run_input.dtype}")
    with tempfile.TemporaryDirectory(prefix="kerasseg-gpu-") as folder:
        path = os.path.join(folder, "model.tflite")
        with open(path, "wb") as f:
            f.write(data)
        result_path = os.path.join(folder, "result.json")
        command = [sys.executable, _WORKER, path, result_path]
        if run:
            np.save(os.path.join(folder, "input.npy"), _random_input(data) if run_input is None else run_input)
            command += ["--run", os.path.join(folder, "input.npy"), os.path.join(folder, "outputs.npz")]
        if enforce_f32:
            command.append("--enforce-f32")
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False,
                              env=vulkan_environment())
        adapter = _ADAPTER.search(done.stderr)
        if not os.path.isfile(result_path) or (adapter is None and done.returncode != 0):
            raise GpuUnavailableError(f"Expected LiteRT's GPU accelerator to start (a Vulkan adapter: Mesa >= 25 "
                                      f"lavapipe, see .ci/install-vulkan-driver). Received: exit status "
                                      f"{done.returncode}, stderr ending\n{done.stderr[-2000:]}")
        with open(result_path, encoding="utf-8") as f:
            result = json.load(f)
        if adapter is None and not result["compiled"] and not _fallbacks(done.stderr):
            raise GpuUnavailableError(f"Expected LiteRT's GPU accelerator to find a Vulkan adapter. Received: "
                                      f"{result['error']}; stderr ending\n{done.stderr[-2000:]}")
        comparison = None
        if run and result["compiled"]:
            with np.load(os.path.join(folder, "outputs.npz"), allow_pickle=False) as outputs:
                comparison = _compare(dict(outputs))
            comparison.update(enforce_f32=enforce_f32, run_s=result["run_s"])
    partition = _PARTITION.search(done.stderr)
    return GpuReport(compiled=result["compiled"], fallbacks=_fallbacks(done.stderr),
                     ops_on_gpu=int(partition.group(1)) if partition else None,
                     ops_on_cpu=int(partition.group(2)) if partition else None,
                     adapter=adapter.group(1).strip() if adapter else None, error=result["error"],
                     compile_s=result["compile_s"], run=comparison, litert_version=version("ai-edge-litert"))
