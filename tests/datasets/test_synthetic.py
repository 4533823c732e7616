"""The synthetic street-scene dataset: determinism, content, the written layout and the command-line tool."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from kerasseg.data import synthetic
from kerasseg.data.folder import list_pairs, read_classes

from tests.paths import ROOT  # noqa: E402


def _tree_hashes(root) -> dict:
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def test_generate_scene_is_deterministic_by_seed():
    a_img, a_lab = synthetic.generate_scene(7, 64, 128)
    b_img, b_lab = synthetic.generate_scene(7, 64, 128)
    c_img, c_lab = synthetic.generate_scene(8, 64, 128)
    assert a_img.tobytes() == b_img.tobytes() and a_lab.tobytes() == b_lab.tobytes()
    assert a_img.tobytes() != c_img.tobytes() and a_lab.tobytes() != c_lab.tobytes()


@pytest.mark.parametrize("size", [(128, 256), (40, 96)])
def test_scene_shapes_and_label_values(size):
    image, label = synthetic.generate_scene(3, *size)
    assert image.shape == (*size, 3) and image.dtype == np.uint8
    assert label.shape == size and label.dtype == np.uint8
    assert set(np.unique(label)) <= set(range(len(synthetic.CLASS_NAMES))) | {synthetic.IGNORE_LABEL}


def test_scene_content():
    names = synthetic.CLASS_NAMES
    seen = set()
    counts = np.zeros(len(names))
    scenes = 20
    for seed in range(scenes):
        _, label = synthetic.generate_scene(seed)
        present = set(np.unique(label).tolist())
        seen |= present
        for c in present - {255}:
            counts[c] += 1
        # Every scene shows the street itself.
        for required in ("road", "sidewalk", "building", "sky"):
            assert names.index(required) in present, (seed, required)
        void = np.mean(label == 255)
        assert 0.005 < void < 0.15, (seed, void)
    assert seen == set(range(len(names))) | {255}
    # People, vehicles, poles and vegetation appear in most scenes.
    for name in ("pole", "vegetation", "person", "vehicle"):
        assert counts[names.index(name)] >= 0.7 * scenes, (name, counts)


def test_people_and_vehicles_are_not_tiny():
    person, vehicle = synthetic.CLASS_NAMES.index("person"), synthetic.CLASS_NAMES.index("vehicle")
    for seed in range(10):
        _, label = synthetic.generate_scene(seed)
        for cls, min_pixels in ((person, 12), (vehicle, 40)):
            pixels = int(np.sum(label == cls))
            assert pixels == 0 or pixels >= min_pixels, (seed, synthetic.CLASS_NAMES[cls], pixels)


def test_colour_alone_does_not_solve_the_task():
    # A nearest-class-mean colour classifier fitted on some scenes, scored on others.
    k = len(synthetic.CLASS_NAMES)
    sums, counts = np.zeros((k, 3)), np.zeros(k)
    for seed in range(10):
        image, label = synthetic.generate_scene(seed, 64, 128)
        for c in range(k):
            m = label == c
            sums[c] += image[m].sum(0)
            counts[c] += m.sum()
    means = sums / np.maximum(counts, 1)[:, None]
    correct = total = 0
    for seed in range(100, 105):
        image, label = synthetic.generate_scene(seed, 64, 128)
        valid = label != 255
        pred = np.argmin(((image[valid][:, None, :].astype(float) - means[None]) ** 2).sum(-1), axis=1)
        correct += int(np.sum(pred == label[valid]))
        total += int(valid.sum())
    assert correct / total < 0.75


def test_scene_seeds_disjoint_and_deterministic():
    train = synthetic.scene_seeds(0, "train", 300)
    val = synthetic.scene_seeds(0, "val", 60)
    assert len(set(train)) == 300 and len(set(val)) == 60
    assert not set(train) & set(val)
    assert train == synthetic.scene_seeds(0, "train", 300)
    assert train[:10] != synthetic.scene_seeds(1, "train", 10)
    with pytest.raises(ValueError, match="Received: split='test'"):
        synthetic.scene_seeds(0, "test", 1)


@pytest.mark.parametrize("kwargs, message", [
    ({"seed": -1}, "Received: seed=-1"),
    ({"seed": 1.5}, "Received: seed=1.5"),
    ({"seed": 0, "height": 8}, "Received: height=8"),
    ({"seed": 0, "width": "256"}, "Received: width='256'"),
])
def test_generate_scene_validates_arguments(kwargs, message):
    with pytest.raises(ValueError, match=f"Expected .*{message}"):
        synthetic.generate_scene(**kwargs)


def test_write_dataset_layout_and_byte_identical(tmp_path):
    a = synthetic.write_dataset(tmp_path / "a", num_train=3, num_val=2, height=48, width=96, seed=5)
    b = synthetic.write_dataset(tmp_path / "b", num_train=3, num_val=2, height=48, width=96, seed=5)
    c = synthetic.write_dataset(tmp_path / "c", num_train=3, num_val=2, height=48, width=96, seed=6)
    ha, hb, hc = _tree_hashes(a), _tree_hashes(b), _tree_hashes(c)
    assert ha == hb
    images = [p for p in ha if p.startswith("images")]
    assert len(images) == 5 and all(ha[p] != hc[p] for p in images)

    info = read_classes(a)
    assert info.names == synthetic.CLASS_NAMES and info.colors == synthetic.PALETTE and info.ignore_label == 255
    pairs = list_pairs(a, "train")
    assert len(pairs) == 3 and len(list_pairs(a, "val")) == 2
    # Masks are palette PNGs whose indices are the labels (and whose palette shows the class colours).
    mask = Image.open(pairs[0][1])
    assert mask.mode == "P" and mask.size == (96, 48)
    assert tuple(mask.getpalette()[:3]) == synthetic.PALETTE[0]
    with open(os.path.join(a, synthetic.PARAMS_FILE)) as f:
        params = json.load(f)
    assert params["num_train"] == 3 and params["seed"] == 5 and params["height"] == 48


def test_write_dataset_reuse_conflict_and_overwrite(tmp_path):
    root = tmp_path / "data"
    synthetic.write_dataset(root, num_train=2, num_val=1, height=32, width=64)
    image = os.path.join(root, "images", "train", "train_00000.png")
    stamp = os.stat(image).st_mtime_ns
    # Same arguments: nothing is rewritten.
    synthetic.write_dataset(root, num_train=2, num_val=1, height=32, width=64)
    assert os.stat(image).st_mtime_ns == stamp
    with pytest.raises(ValueError, match="other parameters.*overwrite=True"):
        synthetic.write_dataset(root, num_train=3, num_val=1, height=32, width=64)
    synthetic.write_dataset(root, num_train=3, num_val=1, height=32, width=64, overwrite=True)
    assert len(list_pairs(root, "train")) == 3
    assert synthetic.read_params(root)["num_train"] == 3
    assert sorted(os.listdir(tmp_path)) == ["data"]  # no temporary folder left behind


def test_write_dataset_refuses_foreign_folders(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a complete synthetic dataset"):
        synthetic.write_dataset(tmp_path / "mine", num_train=1, num_val=1, height=32, width=32)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="which is a file"):
        synthetic.write_dataset(tmp_path / "file", num_train=1, num_val=1, height=32, width=32)
    with pytest.raises(ValueError, match="Received: num_train=0"):
        synthetic.write_dataset(tmp_path / "x", num_train=0)
    # An empty folder is fine.
    (tmp_path / "empty").mkdir()
    synthetic.write_dataset(tmp_path / "empty", num_train=1, num_val=1, height=32, width=32)
    assert synthetic.read_params(tmp_path / "empty") is not None


def test_interrupted_write_leaves_no_dataset(tmp_path, monkeypatch):
    real = synthetic.generate_scene
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "generate_scene", failing)
    with pytest.raises(KeyboardInterrupt):
        synthetic.write_dataset(tmp_path / "data", num_train=4, num_val=1, height=32, width=32)
    assert os.listdir(tmp_path) == []
    monkeypatch.setattr(synthetic, "generate_scene", real)
    synthetic.write_dataset(tmp_path / "data", num_train=4, num_val=1, height=32, width=32)
    assert synthetic.read_params(tmp_path / "data")["num_train"] == 4


def test_synthetic_fixture_reads_back_through_the_folder_loader(synthetic_root):
    from kerasseg.data import load_dataset

    ds = load_dataset("synthetic", synthetic_root, "val", batch_size=4, normalization="unit")
    images, labels = next(iter(ds))
    assert images.shape == (4, 64, 128, 3) and labels.shape == (4, 64, 128)
    for i, (image_path, mask_path) in enumerate(list_pairs(synthetic_root, "val")):
        np.testing.assert_allclose(images[i].numpy() * 255.0, np.asarray(Image.open(image_path)), atol=1e-3)
        np.testing.assert_array_equal(labels[i].numpy(), np.asarray(Image.open(mask_path)))


def test_cli_writes_the_layout(tmp_path):
    out = tmp_path / "syn"
    cmd = [sys.executable, os.path.join(ROOT, "tools", "make_synthetic.py"), "--output", str(out), "--num-train", "2",
           "--num-val", "1", "--size", "32x64", "--seed", "3"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "2 train / 1 val" in result.stdout
    assert sorted(os.listdir(out / "images" / "train")) == ["train_00000.png", "train_00001.png"]
    assert os.listdir(out / "masks" / "val") == ["val_00000.png"]
    assert Image.open(out / "images" / "train" / "train_00000.png").size == (64, 32)
    assert read_classes(out).names == synthetic.CLASS_NAMES
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "Reused" in again.stdout
    bad = subprocess.run(cmd[:-4] + ["--size", "32by64"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Received: --size '32by64'" in bad.stderr
