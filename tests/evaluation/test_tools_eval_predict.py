"""tools/evaluate.py and tools/predict.py end to end on a tiny folder dataset and a tiny saved model."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.paths import ROOT  # noqa: E402
CLASS_NAMES = ["road", "car", "sky"]
PALETTE = [[128, 64, 128], [0, 0, 142], [70, 130, 180]]
SIZES = [(32, 64), (40, 50), (24, 90)]


def _run_tool(name, *args, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONHASHSEED="0")
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", name), *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A three-class folder dataset (val images of different sizes) and a tiny ERFNet saved with metadata."""
    import kerasseg
    from kerasseg.data.folder import ClassInfo, write_classes

    root = tmp_path_factory.mktemp("tools")
    data = root / "data"
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (data / "images" / split).mkdir(parents=True)
        (data / "masks" / split).mkdir(parents=True)
        for i, (h, w) in enumerate(SIZES):
            image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            labels = np.zeros((h, w), np.uint8)
            labels[h // 3:] = 1
            labels[: h // 4] = 2
            labels[rng.random((h, w)) < 0.05] = 255
            Image.fromarray(image).save(data / "images" / split / f"{split}_{i}.png")
            mask = Image.fromarray(labels, "L").convert("P")
            mask.putpalette([c for rgb in PALETTE for c in rgb] + [0] * (3 * 253))
            mask.save(data / "masks" / split / f"{split}_{i}.png")
    write_classes(data, ClassInfo(names=CLASS_NAMES, colors=PALETTE, ignore_label=255))

    model = kerasseg.build_model("erfnet", num_classes=3, input_shape=(32, 64, 3))
    model.kerasseg_metadata = model.kerasseg_metadata.with_dataset(class_names=CLASS_NAMES, palette=PALETTE,
                                                                   ignore_label=255)
    path = kerasseg.save_model(model, root / "model.keras")
    return {"root": root, "data": data, "model": path, "keras": model}


def _val_pairs(workspace):
    from kerasseg.preprocessing import normalize_np

    meta = workspace["keras"].kerasseg_metadata
    pairs = []
    for i in range(len(SIZES)):
        image = np.asarray(Image.open(workspace["data"] / "images" / "val" / f"val_{i}.png").convert("RGB"))
        labels = np.asarray(Image.open(workspace["data"] / "masks" / "val" / f"val_{i}.png")).astype(np.int32)
        pairs.append((normalize_np(image, meta.mean, meta.std), labels))
    return pairs


def _import_tool(name):
    import importlib

    return importlib.import_module(f"kerasseg.cli.{name}")


@pytest.mark.parametrize("extra,expected_settings", [
    ([], {"mode": "whole", "flip": False}),
    (["--mode", "multiscale", "--scales", "0.75", "1.0"], {"mode": "multiscale", "flip": True,
                                                           "scales": [0.75, 1.0]}),
])
def test_evaluate_cli_end_to_end(workspace, extra, expected_settings):
    from kerasseg.evaluation import evaluate, keras_predict_fn

    out = workspace["root"] / f"eval_{expected_settings['mode']}"
    proc = _run_tool("evaluate.py", workspace["model"], "--dataset", "folder", "--data-dir", workspace["data"],
                     "--split", "val", "--output-dir", out, *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mIoU" in proc.stdout and all(name in proc.stdout for name in CLASS_NAMES)
    metrics = json.loads((out / "metrics.json").read_text())
    with Image.open(out / "confusion.png") as im:
        assert im.format == "PNG"
    assert metrics["num_images"] == len(SIZES)
    assert [c["name"] for c in metrics["classes"]] == CLASS_NAMES
    for key, value in expected_settings.items():
        assert metrics["settings"][key] == value
    # The same model evaluated in this process on the same PNGs, normalised with the model's metadata.
    kwargs = {"scales": (0.75, 1.0)} if expected_settings["mode"] == "multiscale" else {}
    reference = evaluate(keras_predict_fn(workspace["keras"]), _val_pairs(workspace), num_classes=3,
                         ignore_label=255, mode=expected_settings["mode"], **kwargs)
    cm = np.asarray(metrics["confusion_matrix"])
    assert cm.sum() == reference.confusion.sum() == sum(
        int((labels != 255).sum()) for _, labels in _val_pairs(workspace))
    # Float summation order may differ between the two runs: allow a handful of near-tie pixels to flip.
    assert np.abs(cm - reference.confusion).sum() <= 0.002 * cm.sum()
    assert metrics["miou"] == pytest.approx(reference.miou, abs=5e-3)


def test_evaluate_cli_generates_and_then_reuses_a_synthetic_dataset(workspace, tmp_path, capsys):
    import kerasseg
    from kerasseg.data import synthetic

    model = kerasseg.build_model("erfnet", num_classes=len(synthetic.CLASS_NAMES), input_shape=(32, 64, 3))
    path = kerasseg.save_model(model, tmp_path / "syn.keras")  # metadata without class names
    data = tmp_path / "synthetic"
    proc = _run_tool("evaluate.py", path, "--dataset", "synthetic", "--data-dir", data, "--num-train", 1,
                     "--num-val", 2, "--output-dir", tmp_path / "out1", "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    params = synthetic.read_params(data)
    assert (params["num_val"], params["height"], params["width"]) == (2, 32, 64)
    metrics = json.loads((tmp_path / "out1" / "metrics.json").read_text())
    assert metrics["num_images"] == 2
    assert [c["name"] for c in metrics["classes"]] == list(synthetic.CLASS_NAMES)  # from classes.json
    # A second run with other generation defaults uses the existing dataset instead of refusing or rewriting it.
    assert _import_tool("evaluate").main([str(path), "--dataset", "synthetic", "--data-dir", str(data),
                                         "--num-val", "5", "--output-dir", str(tmp_path / "out2"), "--quiet"]) == 0
    assert synthetic.read_params(data) == params
    again = json.loads((tmp_path / "out2" / "metrics.json").read_text())
    assert again["confusion_matrix"] == metrics["confusion_matrix"]
    assert "mIoU" in capsys.readouterr().out


def test_evaluate_cli_errors(workspace, tmp_path, capsys):
    import kerasseg

    tool = _import_tool("evaluate")
    assert tool.main([str(workspace["model"]), "--data-dir", str(tmp_path / "missing")]) == 2
    assert "Expected a dataset folder" in capsys.readouterr().err
    assert tool.main([str(tmp_path / "nope.keras"), "--data-dir", str(workspace["data"])]) == 2
    assert "nope.keras" in capsys.readouterr().err
    four = kerasseg.save_model(kerasseg.build_model("erfnet", num_classes=4, input_shape=(32, 64, 3)),
                               tmp_path / "four.keras")
    assert tool.main([str(four), "--data-dir", str(workspace["data"])]) == 2
    assert "Expected a dataset with the model's 4 classes" in capsys.readouterr().err
    assert tool.main([str(workspace["model"]), "--data-dir", str(workspace["data"]), "--stride", "3x"]) == 2
    assert "--stride" in capsys.readouterr().err


def test_predict_cli_on_a_folder(workspace):
    from kerasseg.evaluation import keras_predict_fn, predict_labels

    out = workspace["root"] / "pred"
    frames = workspace["data"] / "images" / "val"
    proc = _run_tool("predict.py", workspace["model"], frames, "--output-dir", out, "--mode", "slide", "--alpha",
                     "0.4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wrote 3 predictions" in proc.stdout
    fn = keras_predict_fn(workspace["keras"])
    for i, ((image, _), (h, w)) in enumerate(zip(_val_pairs(workspace), SIZES)):
        name = f"val_{i}"
        with Image.open(out / f"{name}_labels.png") as im:
            assert im.mode == "P"
            labels = np.asarray(im)
        assert labels.shape == (h, w) and labels.max() < 3
        expected = predict_labels(fn, image, mode="slide", num_classes=3)
        assert (labels == expected).mean() > 0.995
        color = np.asarray(Image.open(out / f"{name}_color.png"))
        np.testing.assert_array_equal(color, np.asarray(PALETTE, np.uint8)[labels])
        source = np.asarray(Image.open(frames / f"{name}.png").convert("RGB")).astype(np.float64)
        blend = np.rint(0.6 * source + 0.4 * np.asarray(PALETTE, np.float64)[labels])
        np.testing.assert_array_equal(np.asarray(Image.open(out / f"{name}_overlay.png")), blend.astype(np.uint8))


def test_predict_single_image_and_input_errors(workspace, tmp_path, capsys):
    predict = _import_tool("predict")
    image = workspace["data"] / "images" / "val" / "val_1.png"
    assert predict.main([str(workspace["model"]), str(image), "--output-dir", str(tmp_path / "one"), "--quiet"]) == 0
    assert sorted(os.listdir(tmp_path / "one")) == ["val_1_color.png", "val_1_labels.png", "val_1_overlay.png"]

    video = tmp_path / "drive.mp4"
    video.write_bytes(b"\x00" * 64)
    have_reader = any(__import__("importlib").util.find_spec(m) for m in ("imageio", "cv2"))
    if not have_reader:
        assert predict.main([str(workspace["model"]), str(video), "--output-dir", str(tmp_path / "v")]) == 2
        err = capsys.readouterr().err
        assert "imageio" in err and "OpenCV" in err and "ffmpeg -i" in err and "folder of frames" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert predict.main([str(workspace["model"]), str(empty), "--output-dir", str(tmp_path / "e")]) == 2
    assert "Expected a folder containing images" in capsys.readouterr().err
    assert predict.main([str(workspace["model"]), str(tmp_path / "none.png"), "--output-dir", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err
    assert predict.main([str(workspace["model"]), str(image), "--output-dir", str(tmp_path), "--alpha", "3"]) == 2
    assert "--alpha" in capsys.readouterr().err


def test_evaluate_and_predict_cli_with_the_dense_crf(workspace, tmp_path, capsys):
    from kerasseg.evaluation import DenseCRF, evaluate, keras_predict_fn, predict_logits

    meta = workspace["keras"].kerasseg_metadata
    crf = DenseCRF(appearance_weight=6.0, iterations=2)
    flags = ["--crf", "--crf-w1", "6", "--crf-iterations", "2", "--quiet"]
    out = tmp_path / "eval_crf"
    assert _import_tool("evaluate").main([str(workspace["model"]), "--data-dir", str(workspace["data"]),
                                         "--output-dir", str(out), *flags]) == 0
    assert "dense CRF" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["refine"] == crf.settings()
    fn = keras_predict_fn(workspace["keras"])
    reference = evaluate(fn, _val_pairs(workspace), num_classes=3, refine=crf.for_normalized_images(meta.mean,
                                                                                                    meta.std))
    cm = np.asarray(metrics["confusion_matrix"])
    assert np.abs(cm - reference.confusion).sum() <= 0.002 * cm.sum()

    frames = workspace["data"] / "images" / "val"
    assert _import_tool("predict").main([str(workspace["model"]), str(frames), "--output-dir",
                                        str(tmp_path / "pred"), *flags]) == 0
    for i, (image, _) in enumerate(_val_pairs(workspace)):
        frame = np.asarray(Image.open(frames / f"val_{i}.png").convert("RGB"))
        expected = crf(predict_logits(fn, image, num_classes=3, probabilities=True), frame).argmax(-1)
        with Image.open(tmp_path / "pred" / f"val_{i}_labels.png") as im:
            assert (np.asarray(im) == expected).mean() > 0.995


def test_crf_flags_errors_and_missing_extra(workspace, tmp_path, capsys, monkeypatch):
    evaluate_tool, predict_tool = _import_tool("evaluate"), _import_tool("predict")
    base = [str(workspace["model"]), "--data-dir", str(workspace["data"]), "--output-dir", str(tmp_path), "--crf"]
    assert evaluate_tool.main(base + ["--crf-theta-alpha", "0"]) == 2
    assert "--crf-theta-alpha: Expected appearance_xy_std to be a positive number" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    assert evaluate_tool.main(base) == 2
    assert "pip install 'kerasseg[crf]'" in capsys.readouterr().err
    image = workspace["data"] / "images" / "val" / "val_0.png"
    assert predict_tool.main([str(workspace["model"]), str(image), "--output-dir", str(tmp_path), "--crf"]) == 2
    assert "pip install 'kerasseg[crf]'" in capsys.readouterr().err


def test_crf_benchmark_tool_prints_the_comparison_and_the_grid(workspace, capsys):
    import re

    tool = _import_tool("crf_benchmark")
    assert tool.main(["--data-dir", str(workspace["data"]), "--dataset", "folder", "--model", str(workspace["model"]),
                      "--boundary-width", "1", "--crf-iterations", "1", "--grid-w1", "0", "4",
                      "--grid-theta-alpha", "121"]) == 0
    out = capsys.readouterr().out
    assert all(re.search(rf"^\| {name} +\|", out, re.M) for name in CLASS_NAMES)
    means = re.search(r"^\| mean +\| \*\*([\d.]+)\*\* \| \*\*([\d.]+)\*\* \| \*\*([\d.]+)\*\* \| \*\*([\d.]+)\*\*", out,
                      re.M).groups()
    # The grid's point at the default parameters is the same evaluation as the comparison's CRF column.
    assert re.search(rf"^\| 4 \| 121 \| {re.escape(means[1])} \| {re.escape(means[3])} \|$", out, re.M), out
    assert re.search(r"^\| 0 \| 121 \| [\d.]+ \| [\d.]+ \|$", out, re.M) and "3 frames" in out
