"""tools/verify_dataset.py, tools/visualize_dataset.py and the dataset grid."""

import json

import numpy as np
import pytest
from PIL import Image

from kerasseg.cli import verify_dataset as verify_tool
from kerasseg.cli import visualize_dataset as visualize_tool
from kerasseg.data.verify import verify_dataset
from kerasseg.visualize import dataset_grid
from tests import dataset_fixtures as fx


def test_verify_counts_and_histogram(tmp_path, capsys):
    root = fx.camvid(tmp_path)
    report = verify_dataset("camvid", root, "train")
    assert report.ok and report.num_pairs == 3 and report.sizes == {(fx.H, fx.W): 3}
    # ramp(0..11) over 96 pixels: 8 per value and frame; 11 (void) is ignored.
    np.testing.assert_array_equal(report.histogram, np.full(11, 24))
    assert report.ignored_pixels == 24
    np.testing.assert_allclose(report.frequencies().sum() + 24 / 288, 1.0)
    out_json = tmp_path / "report.json"
    assert verify_tool.main(["--format", "camvid", "--root", str(root), "--split", "train", "val",
                             "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    assert "split 'train': 3 pairs" in text and "split 'val': 2 pairs" in text and "no errors" in text
    assert json.loads(out_json.read_text())["splits"][1]["histogram"]["sky"] == 16


def test_verify_reports_every_problem_and_fails(tmp_path, capsys):
    root = fx.camvid(tmp_path)
    fx.save_index(str(tmp_path / "trainannot" / "0001TP_train000.png"), fx.ramp([0, 77]))
    fx.save_index(str(tmp_path / "trainannot" / "0001TP_train001.png"), np.zeros((5, 5), np.uint8))
    broken = tmp_path / "train" / "0001TP_train002.png"
    broken.write_bytes(broken.read_bytes()[:60])
    report = verify_dataset("camvid", root, "train")
    assert not report.ok and report.unexpected_values == {77: 48}
    messages = "\n".join(f"{p}: {m}" for p, m in report.errors)
    assert "0001TP_train000.png: label values outside the classes that are not ignored: [77]" in messages
    assert "0001TP_train001.png: size mismatch" in messages
    assert "train/0001TP_train002.png: unreadable or truncated image" in messages
    assert verify_tool.main(["--format", "camvid", "--root", str(root)]) == 1
    assert "3 error(s)" in capsys.readouterr().out


def test_verify_reports_pairing_problem(tmp_path):
    root = fx.cityscapes(tmp_path)
    (tmp_path / "gtFine" / "val" / "frankfurt" / "frankfurt_000000_000000_gtFine_labelIds.png").unlink()
    report = verify_dataset("cityscapes", root, "val")
    assert not report.ok and "frankfurt_000000_000000_gtFine_labelIds.png" in report.errors[0][1]


def test_verify_cityscapes_histogram_follows_the_mapping(tmp_path):
    report = verify_dataset("cityscapes", fx.cityscapes(tmp_path), "val")
    # 96 pixels of ids 0..33 cyclically: ids 0..27 three times, 28..33 twice.
    assert report.histogram[0] == 3 and report.histogram[15] == 2  # road (id 7), bus (id 28)
    assert report.histogram.sum() + report.ignored_pixels == fx.H * fx.W


def test_dataset_grid_tiles_and_legend():
    images = [fx.image(0), fx.image(1)]
    labels = [fx.ramp([0, 1]), fx.ramp([1, 255])]
    grid = dataset_grid(images, labels, ["road", "car", "sky"], [(255, 0, 0), (0, 255, 0), (0, 0, 255)], columns=2,
                        title="t")
    array = np.asarray(grid)
    assert grid.width >= 2 * (2 * fx.W + 4)
    # The legend shows present classes only: red and green swatches, no blue.
    assert np.any(np.all(array == (255, 0, 0), axis=-1)) and np.any(np.all(array == (0, 255, 0), axis=-1))
    assert not np.any(np.all(array == (0, 0, 255), axis=-1))
    with pytest.raises(ValueError, match="Received: 2 images, 1 labels"):
        dataset_grid(images, labels[:1], ["a", "b"])


def test_visualize_tool_writes_png(tmp_path, capsys):
    root = fx.camvid(tmp_path / "data")
    out = tmp_path / "grid.png"
    assert visualize_tool.main(["--format", "camvid", "--root", str(root), "--split", "train", "--num", "2",
                                "--augment", "--crop-size", "8x12", "--output", str(out)]) == 0
    with Image.open(out) as im:
        assert im.mode == "RGB" and im.width >= 2 * (2 * 12 + 4)
    assert "2 examples" in capsys.readouterr().out


def test_benchmark_data_prints_figures(capsys, monkeypatch):
    from kerasseg.cli import benchmark

    # The train step itself is Keras' train_on_batch (covered by the training tests); a fixed figure keeps this
    # test to the pipeline timing, the printing and the ratio.
    monkeypatch.setattr(benchmark, "_train_step_throughput", lambda *args: 0.5)
    assert benchmark.main(["data", "--scene-size", "64", "128", "--crop-size", "32", "64", "--scenes", "2",
                           "--batch-size", "1", "--steps", "2", "--warmup", "1", "--train-steps", "1",
                           "--train-warmup", "1"]) == 0
    out = capsys.readouterr().out
    assert "32x64 crops" in out and "erfnet train step (32x64, batch 1): 0.50 images/s" in out
    pipeline = float(out.split("batch 1): ")[1].split(" images/s")[0])
    assert f"ratio pipeline / train step: {pipeline / 0.5:.2f}x" in out
