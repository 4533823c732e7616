"""The models shipped in the package: lookup, loading, sizes, and the int8 file on the device runtime."""

import os

import numpy as np
import pytest

import kerasseg
from kerasseg.data import camvid

from tests.edge_checks import assert_deploys
from tests.mediapipe_client import mediapipe_segment, needs_mediapipe
from tests.paths import ROOT  # noqa: E402
CAMVID = os.path.join(ROOT, "..", "shared", "camvid")


def test_lookup_and_errors():
    assert "erfnet_camvid" in kerasseg.list_pretrained()
    assert kerasseg.list_pretrained("erfnet*") == ["erfnet_camvid"]
    assert kerasseg.list_pretrained("nothing*") == []
    with pytest.raises(ValueError, match=r"Unknown pretrained model\. Expected one of \['deeplabv3plus_lite0_camvid', "
                                         r"'erfnet_camvid', 'lraspp_lite0_camvid'\]\. "
                                         r"Received: name='erfnet_cityscapes'"):
        kerasseg.pretrained("erfnet_cityscapes")


def test_shipped_files_fit_the_budget():
    files = kerasseg.pretrained_files("erfnet_camvid")
    assert set(files) == {"keras", "tflite_int8", "sidecar"}
    total = sum(os.path.getsize(p) for p in files.values())
    assert total < 12 * 10 ** 6, f"pretrained erfnet_camvid files take {total} bytes"


@pytest.fixture(scope="module")
def model():
    return kerasseg.pretrained("erfnet_camvid")


def test_model_and_metadata(model):
    assert tuple(model.inputs[0].shape) == (None, 360, 480, 3)
    assert tuple(model.outputs[0].shape) == (None, 360, 480, 11)
    meta = model.kerasseg_metadata
    assert meta.model_name == "erfnet" and meta.class_names == list(camvid.CLASS_NAMES)
    assert [tuple(c) for c in meta.palette] == list(camvid.PALETTE) and meta.ignore_label == 255
    from kerasseg.analysis import count_params

    # ERFNet's 2,064,191 for 19 classes, less the final 2x2 transposed conv's 8 x (2*2*16 + 1) for 11 classes
    assert count_params(model) == 2_063_671


def _frames(count):
    """Real CamVid validation frames when the checkout has them, generated street scenes otherwise."""
    from PIL import Image

    if os.path.isdir(CAMVID):
        pairs = camvid.list_pairs(CAMVID, "val")[:count]
        images = [np.asarray(Image.open(a).convert("RGB")) for a, _ in pairs]
        labels = [camvid.lookup()[np.asarray(Image.open(b))] for _, b in pairs]
        return images, labels, True
    from kerasseg.data.synthetic import generate_scene

    scenes = [generate_scene(s, 360, 480) for s in range(count)]
    return [s[0] for s in scenes], None, False


def test_int8_file_on_the_device_runtime_agrees_with_keras(model):
    import tensorflow as tf

    from tflite.runtime import Segmenter

    files = kerasseg.pretrained_files("erfnet_camvid")
    seg = Segmenter(files["tflite_int8"], num_threads=2)
    assert seg.input_size == (360, 480) and seg.num_classes == 11 and list(seg.class_names) == list(camvid.CLASS_NAMES)
    # The file describes itself (standard TFLite metadata, the sidecar's record) and takes camera pixels.
    assert seg.metadata_source == "embedded" and seg.input_format == "pixels" and seg.input_dtype == np.uint8
    images, labels, real = _frames(4)
    meta = model.kerasseg_metadata
    mean, std = np.asarray(meta.mean, np.float32), np.asarray(meta.std, np.float32)
    agree = total = 0
    for k, image in enumerate(images):
        device = seg.predict(image)
        assert device.shape == image.shape[:2] and device.max() < 11
        keras_labels = np.argmax(model(tf.constant(((image - mean) / std)[None], tf.float32)).numpy()[0], -1)
        agree += int((device == keras_labels).sum())
        total += device.size
        if real:
            valid = labels[k] != 255
            # a trained model: most labelled pixels of a real frame are right
            assert (device[valid] == labels[k][valid]).mean() > 0.75
    # Real frames: int8 and float agree almost everywhere (the int8 file comes from a quantisation-aware fine-tuned
    # copy: 96.6 % over the 101 validation frames). Generated scenes are out of the training domain, with many pixels
    # near a decision boundary, so more of them flip (measured 0.78); a file run with the wrong preprocessing or
    # channel order would not come close.
    assert agree / total > (0.95 if real else 0.7)


@pytest.mark.slow
def test_package_tool_writes_the_three_files_with_a_record(tmp_path):
    """tools/package_pretrained.py on a small untrained model and a CamVid-layout dataset written here."""
    import json
    import subprocess
    import sys
    import zipfile

    from tests.dataset_fixtures import image, save_index, save_rgb

    root = tmp_path / "camvid"
    for split, n in (("train", 4), ("val", 2)):
        for k in range(n):
            name = f"0001TP_{split}{k:03d}.png"
            save_rgb(str(root / split / name), image(k, 32, 48))
            save_index(str(root / (split + "annot") / name), (np.arange(32 * 48).reshape(32, 48) // 97) % 12)
    model = kerasseg.build_model("erfnet", num_classes=11, input_shape=(32, 48, 3))
    kerasseg.save_model(model, tmp_path / "m.keras")
    out = tmp_path / "assets"
    cmd = [sys.executable, os.path.join(ROOT, "tools", "package_pretrained.py"), str(tmp_path / "m.keras"),
           "--name", "tiny_camvid", "--dataset", "camvid", "--data-dir", str(root), "--num-calibration", "4",
           "--output-dir", str(out)]
    refused = subprocess.run(cmd + ["--max-miou-drop", "-101"], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and "refused" in refused.stderr and not out.exists()
    stages = []
    for k, scores in enumerate(([0.1, 0.3], [0.25, 0.4, 0.35])):
        stages.append(str(tmp_path / f"history{k}.csv"))
        with open(stages[-1], "w") as f:
            f.write("epoch,loss,val_miou\n" + "".join(f"{e},1.0,{v}\n" for e, v in enumerate(scores)))
    done = subprocess.run(cmd + ["--max-miou-drop", "100", "--history", *stages], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(os.listdir(out)) == ["tiny_camvid.keras", "tiny_camvid_int8.json", "tiny_camvid_int8.tflite"]
    sidecar = json.loads((out / "tiny_camvid_int8.json").read_text())
    record = sidecar["extra"]["pretrained"]
    assert record["val_images"] == 2 and set(record["val_iou"]) == set(camvid.CLASS_NAMES)
    with zipfile.ZipFile(out / "tiny_camvid.keras") as zf:
        names = zf.namelist()
    loaded = kerasseg.load_model(out / "tiny_camvid.keras")
    assert loaded.kerasseg_metadata.extra["pretrained"]["int8_quantization"] == "ptq"
    training = loaded.kerasseg_metadata.extra["training"]
    assert "data_dir" not in training
    assert (training["epochs"], training["stage_epochs"], training["best_epoch"]) == (5, [2, 3], 4)
    assert training["best_val_miou"] == 0.4
    assert not any("optimizer" in n for n in names)


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    from kerasseg.saving import atomic_path

    umask = os.umask(0o022)
    try:
        target = tmp_path / "out.bin"
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"x")
        assert target.read_bytes() == b"x" and (target.stat().st_mode & 0o777) == 0o644
        assert os.listdir(tmp_path) == ["out.bin"]
    finally:
        os.umask(umask)


@needs_mediapipe
@pytest.mark.parametrize("name", kerasseg.list_pretrained())
def test_mediapipe_runs_the_shipped_int8_file_like_the_device_runtime(name, tmp_path):
    """MediaPipe's ImageSegmenter, a client that knows nothing of kerasseg, runs the shipped file as it is: camera
    pixels in, the class names from the file, the device runtime's labels."""
    from tflite.runtime import Segmenter, resize_bilinear

    path = kerasseg.pretrained_files(name)["tflite_int8"]
    seg = Segmenter(path, num_threads=2)
    assert seg.input_format == "pixels" and seg.input_dtype == np.uint8
    (image,), _, _ = _frames(1)
    # At the model's size, so that neither side resizes (their resize rules differ).
    frame = np.clip(np.rint(resize_bilinear(image, seg.input_size)), 0, 255).astype(np.uint8)
    ((labels, mask),) = mediapipe_segment([path], frame, tmp_path)
    assert labels == list(camvid.CLASS_NAMES)
    agreement = float(np.mean(mask == seg.predict(frame)))
    assert agreement >= 0.995, agreement


@pytest.mark.parametrize("name", kerasseg.list_pretrained())
def test_shipped_int8_file_compiles_on_the_gpu_and_every_ethos_u(name):
    """The real toolchains on each shipped file as it is: LiteRT's GPU accelerator compiles it GPU-only and Vela
    leaves no operator on the CPU of Ethos-U55, U65 or U85."""
    assert_deploys(kerasseg.pretrained_files(name)["tflite_int8"], ("ethos-u55-128", "ethos-u65-256", "ethos-u85-256"))
