"""The real edge toolchains behind kerasseg.export.check on tiny models: LiteRT's GPU accelerator (GPU-only
compilation, fallback reasons, a full-precision run against the CPU interpreter), Arm Vela (placement, reasons, SRAM
budget), exports that refuse what the accelerator leaves to the CPU, and tools/deploy_report.py. The registry's
architectures are judged in test_export_matrix.py."""

import json
import os

import keras
import numpy as np
import pytest

from kerasseg.export import EdgeCompatibilityError, check, read_sidecar, to_tflite
from tests.edge_checks import gpu_check
from tests.plain_conversion import plain_conversion


def _upsampler(fused_activation: bool):
    """Conv, then a stride-2 transposed conv; with batch norm and ReLU after it the converter fuses the activation
    into TRANSPOSE_CONV (operator version 4), which the GPU delegate does not support."""
    keras.utils.set_random_seed(21)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    y = keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same")(x)
    if fused_activation:
        y = keras.layers.ReLU()(keras.layers.BatchNormalization()(y))
    return keras.Model(inputs, y)


@pytest.fixture(scope="module")
def upsamplers(tmp_path_factory):
    folder = tmp_path_factory.mktemp("upsamplers")
    return {False: to_tflite(_upsampler(False), folder / "fused_False.tflite", verbose=False),
            True: plain_conversion(_upsampler(True), folder / "fused_True.tflite")}


def test_gpu_compiles_runs_at_full_precision_and_matches_the_cpu(upsamplers):
    report = gpu_check(upsamplers[False], run=True)
    assert report.ok and report.gpu.compiled and report.gpu.fallbacks == [], report.format()
    assert report.gpu.adapter  # the Vulkan adapter the accelerator selected, e.g. llvmpipe
    run = report.gpu.run
    assert run["enforce_f32"] and run["argmax_agreement"] == 1.0 and run["max_abs_diff"] < 1e-4, run
    assert "argmax agreement 100.000 %" in report.format()


def test_gpu_fallback_is_listed_with_the_delegates_reason(upsamplers, tmp_path):
    report = gpu_check(upsamplers[True])
    assert not report.ok and not report.gpu.compiled
    assert [(f.op, f.reason) for f in report.gpu.fallbacks] == [
        ("TRANSPOSE_CONV", "Max version supported: 3. Requested version 4.")]
    assert [f.op for f in report.failures] == ["TRANSPOSE_CONV"] and report.failures[0].rule == "litert-gpu"
    assert "Max version supported: 3" in report.summary()
    # kerasseg's export keeps the activation apart (kerasseg.export.formulations), so the same model deploys.
    path = to_tflite(_upsampler(True), tmp_path / "fused.tflite", target="gpu", verbose=False)
    assert read_sidecar(path).extra["export"]["target"] == "gpu"


def test_export_refuses_what_the_npu_leaves_to_the_cpu(tmp_path):
    # A bilinear resize by 2.5 (no integer factor, so no edge formulation): Vela leaves it to the CPU.
    inputs = keras.Input((8, 8, 4))
    model = keras.Model(inputs, keras.layers.Resizing(20, 20, interpolation="bilinear")(
        keras.layers.Conv2D(4, 1)(inputs)))
    calibration = np.random.default_rng(3).normal(size=(4, 8, 8, 4)).astype(np.float32)
    kwargs = dict(representative_data=calibration, num_calibration_samples=4, verbose=False,
                  input_format="normalized")
    with pytest.raises(EdgeCompatibilityError, match="RESIZE_BILINEAR") as info:
        to_tflite(model, tmp_path / "resize.tflite", "int8", target="ethos-u85-256", **kwargs)
    vela = info.value.report.vela
    assert [op.op for op in vela.cpu_ops] == ["RESIZE_BILINEAR"] and [op.op for op in vela.npu_ops] == ["Conv2D"]
    assert vela.system_config == "Ethos_U85_SYS_DRAM_Mid" and os.listdir(tmp_path) == []
    path = to_tflite(model, tmp_path / "resize.tflite", "int8", target="ethos-u85-256", allow_cpu_fallback=True,
                     **kwargs)
    assert read_sidecar(path).extra["export"]["allow_cpu_fallback"] is True
    # U55 in Vela's Shared_Sram mode keeps the feature maps (2.5 KiB here) in SRAM.
    budget = check(path, "ethos-u55-128", sram_budget=64)
    assert budget.vela.over_budget and any("exceeds the budget" in f.message for f in budget.failures)
    assert check(path, "ethos-u55-128", sram_budget=1 << 20).vela.over_budget is False
    with pytest.raises(ValueError, match="Expected sram_budget"):
        check(path, "ethos-u55-128", sram_budget=-1)


# Two conversions of ERFNet and four compilations: about 50 s on the 2-core CI machine, more than the suite's budget
# leaves; the tool's parts (check, the GPU and Vela reports) are tested above, its bookkeeping below.
@pytest.mark.heavy
def test_deploy_report_writes_the_table(tmp_path, capsys):
    from kerasseg.cli import deploy_report

    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n{deploy_report.BEGIN}\nold\n{deploy_report.END}\ntail\n")
    args = ["--model", "erfnet@32x64", "--num-classes", "3", "--output-dir", str(tmp_path), "--readme", str(readme)]
    assert deploy_report.main(args) == 0
    rows = json.loads((tmp_path / "deploy_report.json").read_text())
    (row,) = rows
    assert (row["architecture"], row["model"], row["input"], row["classes"]) == ("erfnet", "ERFNet", "32x64", 3)
    assert set(row["targets"]) == {"gpu", "ethos-u55-128", "ethos-u65-256", "ethos-u85-256"}
    u85 = row["targets"]["ethos-u85-256"]
    assert u85["total"] > 0 and u85["latency_ms"] > 0 and u85["sram_kib"] > 0
    assert u85["ok"] == (u85["on_accelerator"] == u85["total"] and not u85["reasons"])
    gpu = row["targets"]["gpu"]
    assert gpu["ok"] == (not gpu["reasons"])
    table = (tmp_path / "deploy_report.md").read_text()
    assert table.startswith("| model | classes | input | gpu | ethos-u55-128") and "| ERFNet | 3 | 32x64 |" in table
    assert "| ERFNet | 3 | 32x64 |" in capsys.readouterr().out
    text = readme.read_text()
    assert text.startswith("# title\n") and text.endswith(f"{deploy_report.END}\ntail\n") and "old" not in text
    assert deploy_report.markdown(rows, reasons=False) in text
    with pytest.raises(SystemExit):
        deploy_report.main(["--model", "erfnet", "--output-dir", str(tmp_path)])
