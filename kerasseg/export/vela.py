"""Arm Vela, the compiler for Arm's Ethos-U NPUs, as the judge of an int8 ``.tflite`` file.

Vela (``ethos-u-vela``, https://review.mlplatform.org/plugins/gitiles/ml/ethos-u/ethos-u-vela) compiles a
fully integer TFLite model for one Ethos-U configuration, places every operator it supports on the NPU and leaves the
rest to the CPU, printing why. `vela_compile` runs it in a subprocess (Vela keeps global state and prints to stdout)
on a copy of the model in a temporary folder and returns a `VelaReport`: per-operator NPU / CPU placement with Vela's
reasons, the SRAM / flash / DRAM use and the estimated inference time and MACs from Vela's summary CSV.

Vela has no Python API that reports placement, so this module reads its printed operator list
(``--show-cpu-operations``) and its ``Warning (supported operators)`` blocks. Vela does not cap SRAM in its shared or
dedicated memory modes; `vela_compile` compares the SRAM it uses against ``sram_budget`` itself.

Example::

    report = vela_compile("erfnet_int8.tflite", "ethos-u55-128", sram_budget=1 << 20)
    print(report.format())
    assert report.ok, report.cpu_ops
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import os
import re
import subprocess
import sys
import tempfile

__all__ = ["ETHOS_U_TARGETS", "DEFAULT_SYSTEM_CONFIGS", "VelaOperator", "VelaReport", "vela_compile",
           "vela_version"]

# Vela's --accelerator-config choices (ethosu.vela.architecture_features.Accelerator), restated so that choosing a
# target never needs Vela to be importable.
ETHOS_U_TARGETS = ("ethos-u55-32", "ethos-u55-64", "ethos-u55-128", "ethos-u55-256", "ethos-u65-256",
                   "ethos-u65-512", "ethos-u85-128", "ethos-u85-256", "ethos-u85-512", "ethos-u85-1024",
                   "ethos-u85-2048")
# (system config, memory mode) of Vela's own Arm/vela.ini per NPU family: a microcontroller-class U55 sharing its
# SRAM with the CPU, and application-processor-class U65 / U85 with DRAM and a dedicated 384 KiB SRAM.
DEFAULT_SYSTEM_CONFIGS = {
    "ethos-u55": ("Ethos_U55_High_End_Embedded", "Shared_Sram"),
    "ethos-u65": ("Ethos_U65_High_End", "Dedicated_Sram_384KB"),
    "ethos-u85": ("Ethos_U85_SYS_DRAM_Mid", "Dedicated_Sram_384KB"),
}
_KIB = 1024

_OPERATOR_LINE = re.compile(r"^\s+(NPU|CPU): (\S+) = (.*) \(outputs \[[^\]]*\]\)$")
_WARNING_LINE = re.compile(r"^Warning \(supported operators\) operator: (\w+), ofm: '(.*)'$")


@dataclasses.dataclass(frozen=True)
class VelaOperator:
    """One operator as Vela placed it.

    Attributes:
        placement: ``"NPU"`` or ``"CPU"``.
        op: the TFLite operator type (Vela's name for NPU operators; the TFLite builtin for CPU ones, where Vela
            said why).
        name: the name of its output tensor.
        reason: why Vela left it on the CPU (Vela's own words), or ``""``.
    """

    placement: str
    op: str
    name: str
    reason: str = ""


@dataclasses.dataclass
class VelaReport:
    """What Vela made of one int8 model for one Ethos-U configuration (see the module docstring).

    Attributes:
        accelerator: Vela's accelerator name, e.g. ``"ethos-u55-128"``.
        system_config, memory_mode: the sections of Vela's ``Arm/vela.ini`` used.
        operators: every operator with its placement, in Vela's order.
        sram_bytes, off_chip_flash_bytes, on_chip_flash_bytes, dram_bytes: memory Vela allocated.
        inference_time_s: Vela's estimated time of one inference.
        macs: multiply-accumulates of one inference.
        sram_budget: the SRAM available (bytes), or ``None`` for no budget.
        version: Vela's version.
        error: Vela's error output when it did not compile the model, else ``None``.
    """

    accelerator: str
    system_config: str
    memory_mode: str
    operators: list
    sram_bytes: int | None
    off_chip_flash_bytes: int | None
    on_chip_flash_bytes: int | None
    dram_bytes: int | None
    inference_time_s: float | None
    macs: int | None
    sram_budget: int | None
    version: str
    error: str | None = None

    @property
    def npu_ops(self) -> list:
        return [op for op in self.operators if op.placement == "NPU"]

    @property
    def cpu_ops(self) -> list:
        return [op for op in self.operators if op.placement == "CPU"]

    @property
    def over_budget(self) -> bool:
        return self.sram_budget is not None and self.sram_bytes is not None and self.sram_bytes > self.sram_budget

    @property
    def ok(self) -> bool:
        """Compiled, every operator on the NPU, and within the SRAM budget."""
        return self.error is None and not self.cpu_ops and not self.over_budget

    def problems(self) -> list:
        """Why the model does not deploy, one line each (empty when `ok`)."""
        if self.error is not None:
            return [f"Vela {self.version} failed for {self.accelerator}: {self.error}"]
        lines = [f"{op.op} {op.name!r} runs on the CPU: {op.reason or 'Vela gave no reason'}" for op in self.cpu_ops]
        if self.over_budget:
            lines.append(f"SRAM use {self.sram_bytes / _KIB:.1f} KiB exceeds the budget of "
                         f"{self.sram_budget / _KIB:.1f} KiB")
        return lines

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.update(ok=self.ok, npu_op_count=len(self.npu_ops), cpu_op_count=len(self.cpu_ops))
        return out

    def format(self) -> str:
        lines = [f"Vela {self.version}: {self.accelerator} ({self.system_config}, {self.memory_mode})"]
        if self.error is not None:
            return "\n".join(lines + [f"  compilation failed: {self.error}"])
        lines.append(f"  operators on the NPU {len(self.npu_ops)} / {len(self.operators)}")
        for op in self.cpu_ops:
            lines.append(f"  - CPU: {op.op} {op.name!r}: {op.reason or 'Vela gave no reason'}")
        budget = "" if self.sram_budget is None else f" (budget {self.sram_budget / _KIB:.1f} KiB)"
        lines.append(f"  SRAM {self.sram_bytes / _KIB:.1f} KiB{budget}, off-chip flash "
                     f"{self.off_chip_flash_bytes / _KIB:.1f} KiB, DRAM {self.dram_bytes / _KIB:.1f} KiB")
        lines.append(f"  estimated inference {1000 * self.inference_time_s:.3f} ms, {self.macs / 1e6:.1f} M MACs")
        return "\n".join(lines)


def vela_version() -> str:
    """The installed Vela's version (from the package metadata, without importing Vela)."""
    from importlib.metadata import version

    return version("ethos-u-vela")


def _config_file() -> str:
    # The system configs and memory modes ship with Vela; naming the file keeps Vela from guessing (and warning).
    import importlib.util

    spec = importlib.util.find_spec("ethosu")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("Expected Arm Vela (pip package ethos-u-vela) to be installed. Received: no "
                                  "module 'ethosu'")
    return os.path.join(list(spec.submodule_search_locations)[0], "config_files", "Arm", "vela.ini")


def _reasons(stdout: str) -> dict:
    """``{output tensor name: (operator type, reason)}`` from Vela's ``Warning (supported operators)`` blocks."""
    reasons, current, text = {}, None, []
    for line in stdout.splitlines() + [""]:
        match = _WARNING_LINE.match(line)
        if match:
            current, text = match.groups(), []
        elif current is not None and line.strip():
            text.append(line.strip())
        elif current is not None:
            # The "Reason:" line is specific to the operator; the constraint text after it is Vela's general rule.
            reason = next((t[len("Reason: "):] for t in text if t.startswith("Reason: ")), " ".join(text))
            reasons[current[1]] = (current[0], reason)
            current = None
    return reasons


def _operators(stdout: str) -> list:
    reasons = _reasons(stdout)
    operators = []
    for line in stdout.splitlines():
        match = _OPERATOR_LINE.match(line)
        if not match:
            continue
        placement, op, name = match.groups()
        reason = ""
        if placement == "CPU" and name in reasons:
            op, reason = reasons[name]
        operators.append(VelaOperator(placement, op, name, reason))
    return operators


def _summary(folder: str) -> dict:
    found = glob.glob(os.path.join(folder, "*_summary_*.csv"))
    if len(found) != 1:
        raise RuntimeError(f"Expected one summary CSV from Vela. Received: {len(found)} in its output folder")
    with open(found[0], newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if len(rows) != 1:
        raise RuntimeError(f"Expected one row in Vela's summary CSV. Received: {len(rows)}")
    return rows[0]


def _family(accelerator: str) -> str:
    return accelerator.rsplit("-", 1)[0]


def vela_compile(model, accelerator: str = "ethos-u85-256", *, system_config: str | None = None,
                 memory_mode: str | None = None, sram_budget: int | None = None,
                 timeout: float = 600) -> VelaReport:
    """Compiles an int8 ``.tflite`` model with Vela for one Ethos-U configuration.

    Args:
        model: path to a ``.tflite`` file, or its bytes.
        accelerator: one of `ETHOS_U_TARGETS` (Vela's ``--accelerator-config``).
        system_config, memory_mode: sections of Vela's ``Arm/vela.ini``; ``None`` takes the family's default from
            `DEFAULT_SYSTEM_CONFIGS`.
        sram_budget: SRAM available to the model in bytes; ``None`` checks no budget.
        timeout: seconds before Vela is stopped.

    Returns:
        A `VelaReport`; ``report.error`` is set (and ``report.ok`` false) when Vela refuses the model.

    Raises:
        ValueError: an unknown accelerator or a negative budget.
        ModuleNotFoundError: Vela is not installed.
    """
    from kerasseg.export.options import check_choice
    from kerasseg.runtimes.flatbuffer import model_bytes

    accelerator = check_choice("accelerator", accelerator, ETHOS_U_TARGETS)
    if sram_budget is not None and (isinstance(sram_budget, bool) or not isinstance(sram_budget, int)
                                    or sram_budget <= 0):
        raise ValueError(f"Expected sram_budget to be a positive number of bytes or None. "
                         f"Received: sram_budget={sram_budget!r}")
    default_config, default_mode = DEFAULT_SYSTEM_CONFIGS[_family(accelerator)]
    system_config = system_config or default_config
    memory_mode = memory_mode or default_mode
    data = model_bytes(model)
    config = _config_file()
    version = vela_version()
    with tempfile.TemporaryDirectory(prefix="kerasseg-vela-") as folder:
        network = os.path.join(folder, "model.tflite")
        with open(network, "wb") as f:
            f.write(data)
        command = [sys.executable, "-c", "import sys; from ethosu.vela.vela import main; sys.exit(main())",
                   network, "--output-dir", os.path.join(folder, "out"), "--accelerator-config", accelerator,
                   "--config", config, "--system-config", system_config, "--memory-mode", memory_mode,
                   "--show-cpu-operations"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        empty = dict(operators=[], sram_bytes=None, off_chip_flash_bytes=None, on_chip_flash_bytes=None,
                     dram_bytes=None, inference_time_s=None, macs=None)
        if done.returncode != 0:
            error = (done.stderr.strip() or done.stdout.strip()).splitlines()[-5:]
            return VelaReport(accelerator, system_config, memory_mode, sram_budget=sram_budget, version=version,
                              error=" / ".join(error) or f"exit status {done.returncode}", **empty)
        summary = _summary(os.path.join(folder, "out"))
    kib = {key: round(float(summary[f"{key}_memory_used"]) * _KIB)
           for key in ("sram", "off_chip_flash", "on_chip_flash", "dram")}
    return VelaReport(accelerator, system_config, memory_mode, _operators(done.stdout), kib["sram"],
                      kib["off_chip_flash"], kib["on_chip_flash"], kib["dram"], float(summary["inference_time"]),
                      int(float(summary["nn_macs"])), sram_budget, version)
