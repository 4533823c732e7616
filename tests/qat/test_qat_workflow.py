"""The QAT workflow (kerasseg.qat.workflow) and tools/qat.py: settings, result objects, the end-to-end recipe."""

import json
import os
import subprocess
import sys

import pytest

import kerasseg
from kerasseg.qat import ComparisonResult, QATResult, QATSettings, RecalibrationResult, run_qat, write_report

from tests.paths import ROOT  # noqa: E402


def test_tool_rejects_bad_arguments(tmp_path):
    # The flags as the command line spells them, in a fresh interpreter; the other checks run in-process below.
    out = subprocess.run([sys.executable, "tools/qat.py", "m.keras", "--data-dir", str(tmp_path), "--output",
                          str(tmp_path / "x.tflite"), "--recalibrate-bn", "-1"], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT})
    assert out.returncode != 0 and "--recalibrate-bn" in out.stderr and "-1" in out.stderr


def test_settings_reject_bad_values_before_loading_anything(tmp_path):
    missing = str(tmp_path / "missing.keras")
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        QATSettings(missing, str(tmp_path), str(tmp_path / "x.tflite")).validate()
    with pytest.raises(ValueError, match="'.tflite'"):
        QATSettings("m.keras", str(tmp_path), str(tmp_path / "x.bin")).validate()
    for field, value in (("recalibrate_bn", -1), ("epochs", 0), ("batch_size", 0), ("calibration_samples", 0),
                         ("steps_per_epoch", 0), ("select_epoch", "best"), ("target", "tpu"), ("lr", 0.0),
                         ("input_format", "rgb")):
        with pytest.raises(ValueError, match=f"Received: {field}="):
            QATSettings("m.keras", str(tmp_path), str(tmp_path / "x.tflite"), **{field: value}).validate()
    # The tool names them by their flags.
    with pytest.raises(ValueError, match="Received: --recalibrate-bn=-1"):
        QATSettings("m.keras", str(tmp_path), str(tmp_path / "x.tflite"), recalibrate_bn=-1).validate(
            name=lambda field: "--" + field.replace("_", "-"))
    # Recalibration needs kerasseg.training's function, which this package does not import.
    open(tmp_path / "m.keras", "wb").close()
    with pytest.raises(ValueError, match="recalibrate_batch_norm"):
        run_qat(QATSettings(str(tmp_path / "m.keras"), str(tmp_path), str(tmp_path / "x.tflite"), recalibrate_bn=2))
    assert os.listdir(tmp_path) == ["m.keras"]


def _result(with_ptq=True, recalibrated=True):
    bootstrap = {"difference": 0.25, "confidence": 0.95, "low": -0.5, "high": 1.0, "num_images": 48}
    comparison = ComparisonResult(0.5, 0.49, 1.0, 48)
    if with_ptq:
        comparison.ptq_path, comparison.ptq_miou, comparison.ptq_drop = "m_ptq.tflite", 0.4875, 1.25
        comparison.qat_vs_ptq, comparison.qat_vs_float = bootstrap, dict(bootstrap, difference=-1.0)
    recalibration = (RecalibrationResult({"layers": 3, "batches": 2, "images": 8, "max_mean_shift": 0.5}, 0.45,
                                         "m_recalibrated.keras") if recalibrated else None)
    return QATResult("m.keras", "m.tflite", 2, 1e-4, "median", [0.5, 0.25], comparison, select_epoch="int8",
                     val_miou_per_epoch=[0.48, 0.49, 0.47], best_epoch=1, recalibration=recalibration,
                     check="npu: ok")


def test_result_report_has_the_tool_report_keys(tmp_path):
    report = _result().to_dict()
    assert list(report) == ["model", "output", "epochs", "lr", "class_weights", "loss", "select_epoch",
                            "val_miou_per_epoch", "best_epoch", "recalibration", "float_miou", "qat_miou",
                            "qat_drop", "num_images", "check", "ptq_path", "ptq_miou", "ptq_drop", "qat_vs_ptq",
                            "qat_vs_float"]
    assert report["recalibration"] == {"layers": 3, "batches": 2, "images": 8, "max_mean_shift": 0.5,
                                       "float_miou_before": 0.45, "path": "m_recalibrated.keras"}
    plain = QATResult("m.keras", "m.tflite", 1, 1e-4, None, [0.5], ComparisonResult(0.5, 0.49, 1.0, 1)).to_dict()
    assert list(plain) == ["model", "output", "epochs", "lr", "class_weights", "loss", "float_miou", "qat_miou",
                           "qat_drop", "num_images"]
    path = write_report(_result(), tmp_path / "m.report.json")
    with open(path) as f:
        assert json.load(f) == json.loads(json.dumps(report))


def test_result_summary_line():
    assert _result().summary() == ("float mIoU 50.00, QAT int8 49.00 (drop 1.00 points), PTQ int8 48.75 (drop 1.25 "
                                   "points); QAT - PTQ +0.25 points, 95 % interval [-0.50, +1.00] over 48 images")
    assert _result(with_ptq=False).summary() == "float mIoU 50.00, QAT int8 49.00 (drop 1.00 points)"


def _train_float(name, kwargs, data_dir, tmp_path, epochs):
    import keras

    from kerasseg import data as ksdata
    from kerasseg.preprocessing import NORMALIZATIONS
    from kerasseg.saving import save_model

    model = kerasseg.build_model(name, 8, **kwargs)
    norm = [list(v) for v in NORMALIZATIONS[model.kerasseg_metadata.normalization]]
    train = ksdata.load_dataset("synthetic", data_dir, "train", batch_size=4, augment=True, shuffle=True, seed=0,
                                normalization=norm)
    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255))
    model.fit(train, epochs=epochs, verbose=0)
    return save_model(model, tmp_path / f"{name}.keras")


@pytest.mark.heavy
@pytest.mark.parametrize("name,kwargs,epochs", [
    ("erfnet", {"input_shape": (64, 128, 3)}, 8),
    ("deeplabv3", {"input_shape": (64, 128, 3), "backbone": "resnet50"}, 4),
])
def test_qat_end_to_end_on_synthetic(name, kwargs, epochs, tmp_path):
    """Float training, batch-norm recalibration and QAT fine-tune with the workflow of tools/qat.py, int8 export,
    float / PTQ / QAT scored on the same images."""
    from kerasseg.data.synthetic import write_dataset
    from kerasseg.export import float_tensors, read_sidecar, tflite_ops
    from kerasseg.training import recalibrate_batch_norm

    data_dir = write_dataset(tmp_path / "data", num_train=32, num_val=48, height=64, width=128, seed=0)
    model_path = _train_float(name, kwargs, data_dir, tmp_path, epochs)
    out = str(tmp_path / f"{name}_qat.tflite")
    settings = QATSettings(str(model_path), str(data_dir), out, epochs=2, batch_size=4, lr=1e-4,
                           calibration_samples=16, compare_ptq=True, recalibrate_bn=8, verbose=0)
    report = run_qat(settings, recalibrate_batch_norm=recalibrate_batch_norm).to_dict()
    # The float reference is the model with re-estimated batch-norm statistics (QAT freezes them); four epochs on
    # 32 scenes leave the moving averages far behind the weights.
    assert report["recalibration"]["images"] == 32
    assert os.path.isfile(report["recalibration"]["path"])
    assert not [op for op in tflite_ops(out) if op.startswith("Flex") or op == "CUSTOM"]
    assert float_tensors(out) == []
    assert read_sidecar(out).extra["export"]["quantization"] == "qat"
    assert read_sidecar(out).extra["export"]["input_format"] == "pixels"  # camera frames in, like PTQ int8
    with open(os.path.splitext(out)[0] + ".report.json") as f:
        assert json.load(f)["qat_miou"] == report["qat_miou"]
    # The bounds: QAT int8 within 0.5 mIoU points of the float model, and not worse than PTQ int8. The kept state
    # may be epoch 0, whose int8 file is as close to the float model as PTQ's, so the first holds as it stands.
    assert report["qat_drop"] <= 0.5, report
    # Models this small and short-trained (about 22 % mIoU) move by a point from one fine-tuning epoch to the next
    # on 48 scenes, while QAT and PTQ often differ by a few hundredths: "not worse" is checked as "PTQ not
    # significantly better" (the 95 % paired-bootstrap interval of QAT - PTQ reaches above 0). It still fails on the
    # real faults: an uncalibrated input range put the epoch-0 file 10 points under PTQ.
    both = report["qat_vs_ptq"]
    assert both["high"] > 0, report
    assert both["num_images"] == report["num_images"] == 48
    assert both["difference"] == pytest.approx(100 * (report["qat_miou"] - report["ptq_miou"]))
    assert report["qat_vs_float"]["difference"] == pytest.approx(-report["qat_drop"])
