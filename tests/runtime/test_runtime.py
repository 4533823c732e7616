"""Device runtime (tflite/runtime.py): preprocessing, all heads, fp32 and int8, overlays, CLI, no TensorFlow."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import keras
import tensorflow as tf

import kerasseg
from kerasseg.export import TFLiteModel, to_tflite
from kerasseg.preprocessing import normalize_np
from tflite.runtime import Segmenter, colorize, default_palette, load_image, overlay, resize_bilinear

from tests.paths import ROOT  # noqa: E402
H, W, K = 32, 64, 4
PALETTE = [[10, 20, 30], [200, 0, 0], [0, 200, 0], [0, 0, 200]]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small ERFNet exported as fp32 logits / labels and int8 logits / probabilities / labels."""
    keras.utils.set_random_seed(3)
    model = kerasseg.build_model("erfnet", K, input_shape=(H, W, 3))
    model.kerasseg_metadata = model.kerasseg_metadata.with_dataset(
        class_names=["void", "red", "green", "blue"], palette=PALETTE, ignore_label=255)
    folder = tmp_path_factory.mktemp("runtime")
    rng = np.random.default_rng(0)
    calibration = normalize_np(rng.integers(0, 256, size=(8, H, W, 3)), model.kerasseg_metadata.mean,
                               model.kerasseg_metadata.std)
    paths = {}
    for mode, head in (("fp32", "logits"), ("fp32", "labels"), ("int8", "logits"), ("int8", "probabilities"),
                       ("int8", "labels")):
        paths[mode, head] = to_tflite(model, folder / f"{mode}_{head}.tflite", mode, representative_data=calibration,
                                      output=head, num_calibration_samples=8, verbose=False)
    return {"model": model, "paths": paths, "folder": folder}


def image(height=H, width=W, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3)).astype(np.uint8)


def normalised(model, pixels):
    meta = model.kerasseg_metadata
    return normalize_np(pixels, meta.mean, meta.std)[None]


def test_reads_the_metadata(exported):
    seg = Segmenter(exported["paths"]["int8", "probabilities"], num_threads=1)
    assert seg.input_size == (H, W) and seg.num_classes == K and seg.metadata_source == "embedded"
    assert seg.class_names == ["void", "red", "green", "blue"]
    assert seg.palette.tolist() == PALETTE and seg.palette.dtype == np.uint8
    assert seg.output == "probabilities" and seg.input_dtype == np.uint8 and seg.input_format == "pixels"
    np.testing.assert_allclose(seg.mean, exported["model"].kerasseg_metadata.mean)


def test_fp32_preprocess_and_logits_match_keras(exported):
    model = exported["model"]
    seg = Segmenter(exported["paths"]["fp32", "logits"])
    pixels = image()
    x = seg.preprocess(pixels)
    # Pixels in: the normalisation is in the graph.
    assert x.shape == (1, H, W, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0], pixels)
    np.testing.assert_allclose(seg.logits(pixels), model(normalised(model, pixels), training=False).numpy()[0],
                               atol=1e-4)
    # A PIL image goes through the same path.
    np.testing.assert_array_equal(seg.preprocess(Image.fromarray(pixels)), x)


def test_int8_input_is_quantised_like_the_library(exported):
    path = exported["paths"]["int8", "logits"]
    seg = Segmenter(path)
    lite = TFLiteModel(path)
    pixels = image(seed=1)
    x = seg.preprocess(pixels)
    # The frame's bytes are the model input: uint8, scale 1, zero point 0.
    assert x.dtype == np.uint8 and lite.input_quantization == [1.0, 0]
    np.testing.assert_array_equal(x[0], pixels)
    # Dequantised scores and labels equal the library's at the model resolution.
    np.testing.assert_allclose(seg.logits(pixels), lite(normalised(exported["model"], pixels))[0], atol=1e-6)
    np.testing.assert_array_equal(seg.predict(pixels), lite.predict_labels(normalised(exported["model"], pixels))[0])


@pytest.mark.parametrize("mode", ["fp32", "int8"])
def test_label_head_equals_argmax_of_logit_head(exported, mode):
    pixels = image(seed=2)
    by_logits = Segmenter(exported["paths"][mode, "logits"]).predict(pixels)
    labels_seg = Segmenter(exported["paths"][mode, "labels"])
    by_labels = labels_seg.predict(pixels)
    assert by_labels.dtype == np.uint8 and by_labels.shape == (H, W)
    # int8: both heads quantise the same network, but the logit head also rounds its output.
    assert np.mean(by_logits == by_labels) > (0.999 if mode == "fp32" else 0.97)
    with pytest.raises(ValueError, match="label map"):
        labels_seg.logits(pixels)


def test_probability_head_sums_to_one(exported):
    seg = Segmenter(exported["paths"]["int8", "probabilities"])
    probs = seg.logits(image(seed=3))
    assert probs.shape == (H, W, K)
    assert np.all(probs >= 0) and np.allclose(probs.sum(-1), 1.0, atol=0.05)


@pytest.mark.parametrize("key", [("fp32", "logits"), ("int8", "probabilities"), ("int8", "labels")])
def test_predict_returns_labels_at_the_original_size(exported, key):
    seg = Segmenter(exported["paths"][key])
    pixels = image(50, 90, seed=4)
    labels = seg.predict(pixels)
    assert labels.shape == (50, 90) and labels.dtype == np.uint8 and labels.max() < K
    assert set(seg.timings) == {"preprocess", "inference", "postprocess"}
    low_res = seg.run(seg.preprocess(pixels))
    low_res = low_res if seg.output == "labels" else np.argmax(low_res, -1)
    expected = np.asarray(Image.fromarray(low_res.astype(np.int32)).resize((90, 50), Image.NEAREST))
    np.testing.assert_array_equal(seg.predict(pixels, upsample="nearest"), expected)
    if seg.output == "labels":
        np.testing.assert_array_equal(labels, expected)
    with pytest.raises(ValueError, match="upsample"):
        seg.predict(pixels, upsample="bicubic")


def test_bilinear_upsampling_follows_the_resized_logits(exported):
    seg = Segmenter(exported["paths"]["fp32", "logits"])
    big = image(3 * H, 2 * W, seed=5)
    labels = seg.predict(big)
    logits = seg.logits(big)[None]
    reference = np.argmax(tf.image.resize(logits, (3 * H, 2 * W), method="bilinear").numpy()[0], -1)
    # PIL and TF may differ at the borders only.
    assert np.mean(labels == reference) > 0.99


def test_grey_and_rgba_images_are_accepted(exported):
    seg = Segmenter(exported["paths"]["fp32", "logits"])
    grey = image()[..., 0]
    assert seg.predict(grey).shape == (H, W)
    rgba = np.concatenate([image(), np.full((H, W, 1), 255, np.uint8)], -1)
    np.testing.assert_array_equal(seg.predict(rgba), seg.predict(rgba[..., :3]))
    with pytest.raises(ValueError, match="uint8"):
        seg.predict(image().astype(np.float32))


def test_overlay_and_colorize():
    pixels = np.full((2, 3, 3), 100, np.uint8)
    labels = np.array([[0, 1, 255], [3, 7, -1]])
    palette = [[0, 0, 0], [200, 100, 0], [0, 0, 0], [0, 0, 250]]
    out = overlay(pixels, labels, palette, alpha=0.5)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    assert out[0, 0].tolist() == [50, 50, 50] and out[0, 1].tolist() == [150, 100, 50]
    assert out[1, 0].tolist() == [50, 50, 175]
    # Ignored and out-of-range labels are left unblended.
    for y, x in ((0, 2), (1, 1), (1, 2)):
        assert out[y, x].tolist() == [100, 100, 100]
    np.testing.assert_array_equal(overlay(pixels, labels, palette, alpha=0.0), pixels)
    colours = colorize(labels, palette)
    assert colours[0, 1].tolist() == [200, 100, 0] and colours[0, 2].tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="labels of the image's size"):
        overlay(pixels, labels[:, :2], palette)
    with pytest.raises(ValueError, match="alpha"):
        overlay(pixels, labels, palette, alpha=1.5)
    with pytest.raises(ValueError, match="integer"):
        colorize(labels.astype(np.float32), palette)


def test_segmenter_overlay_uses_the_model_palette(exported):
    seg = Segmenter(exported["paths"]["int8", "labels"])
    pixels = image(40, 70, seed=6)
    labels = seg.predict(pixels)
    np.testing.assert_array_equal(seg.overlay(pixels, alpha=1.0), colorize(labels, PALETTE))


def test_default_palette_is_distinct():
    palette = default_palette(21)
    assert palette.shape == (21, 3) and palette[1].tolist() == [128, 0, 0]
    assert len({tuple(c) for c in palette.tolist()}) == 21


def test_missing_or_inconsistent_sidecar(exported, tmp_path):
    from ai_edge_litert.tools import flatbuffer_utils

    src = exported["paths"]["fp32", "logits"]
    lonely = tmp_path / "lonely.tflite"
    # A file from before the embedded metadata: the flatbuffer without its metadata entry.
    tree = flatbuffer_utils.read_model_from_bytearray(bytearray(open(src, "rb").read()))
    tree.metadata = [m for m in tree.metadata if m.name not in (b"TFLITE_METADATA", "TFLITE_METADATA")]
    lonely.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(tree)))
    with pytest.raises(FileNotFoundError, match="lonely.json"):
        Segmenter(lonely)
    with open(os.path.splitext(src)[0] + ".json") as f:
        meta = json.load(f)
    meta["extra"]["export"]["output"] = "labels"
    (tmp_path / "lonely.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="output='labels'"):
        Segmenter(lonely)
    with pytest.raises(ValueError, match="num_threads"):
        Segmenter(src, num_threads=0)
    # An explicit metadata path overrides the default location.
    assert Segmenter(lonely, metadata_path=os.path.splitext(src)[0] + ".json").output == "logits"


def test_runtime_cli_never_imports_tensorflow(exported, tmp_path):
    picture = tmp_path / "street.png"
    Image.fromarray(image(45, 80, seed=7)).save(picture)
    model_path = exported["paths"]["int8", "logits"]
    overlay_path, labels_path = tmp_path / "overlay.png", tmp_path / "labels.png"
    script = f"""
import runpy, sys
import numpy as np
import tflite.runtime as rt
seg = rt.Segmenter({str(model_path)!r})
labels = seg.predict(np.zeros((20, 30, 3), np.uint8))
assert labels.shape == (20, 30)
sys.argv = ["runtime.py", {str(model_path)!r}, {str(picture)!r}, "--overlay", {str(overlay_path)!r},
            "--labels", {str(labels_path)!r}, "--threads", "1", "--runs", "2"]
try:
    runpy.run_path({os.path.join(ROOT, "tflite", "runtime.py")!r}, run_name="__main__")
except SystemExit as e:
    assert e.code == 0, e.code
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras", "kerasseg"))
print("HEAVY", heavy)
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "HEAVY []" in result.stdout, result.stdout
    assert "latency" in result.stdout and "ms" in result.stdout
    written = np.asarray(Image.open(overlay_path))
    assert written.shape == (45, 80, 3) and written.dtype == np.uint8
    label_map = np.asarray(Image.open(labels_path))
    assert label_map.shape == (45, 80) and label_map.max() < K


def test_runtime_cli_reports_errors(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tflite", "runtime.py"),
                             str(tmp_path / "missing.tflite"), str(tmp_path / "x.png")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "missing.tflite" in result.stderr


# --- host-side up-sampling, uint8 label maps, benchmark ------------------------------------------------------------

@pytest.mark.parametrize("src, dst", [((5, 7), (20, 28)), ((5, 7), (13, 9)), ((8, 4), (8, 4)), ((3, 3), (2, 5))])
def test_resize_bilinear_matches_tensorflow(src, dst):
    scores = np.random.default_rng(8).normal(size=(*src, 3)).astype(np.float32)
    expected = tf.image.resize(scores[None], dst, method="bilinear").numpy()[0]
    out = resize_bilinear(scores, dst)
    assert out.shape == (*dst, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-5)
    with pytest.raises(ValueError, match=r"\(h, w, C\)"):
        resize_bilinear(scores[..., 0], dst)


@pytest.fixture(scope="module")
def upsampling_model():
    """A model whose last layer is a ×4 bilinear up-sampling, exported with the resize left to the host."""
    keras.utils.set_random_seed(4)
    inputs = keras.Input((H, W, 3))
    x = keras.layers.Conv2D(8, 3, strides=4, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(K, 1)(x)
    model = keras.Model(inputs, keras.layers.UpSampling2D(4, interpolation="bilinear")(x), name="up4")
    model.kerasseg_metadata = kerasseg.preprocessing.ModelMetadata(model_name="up4", num_classes=K,
                                                                   input_shape=[H, W, 3])
    return model


def test_host_upsample_runtime_matches_keras(upsampling_model, tmp_path):
    model = upsampling_model
    path = to_tflite(model, tmp_path / "up4.tflite", host_upsample=True)
    seg = Segmenter(path, num_threads=1)
    assert seg.host_upsample == (H, W)
    pixels = image(seed=9)
    reduced = seg.logits(pixels)
    assert reduced.shape == (H // 4, W // 4, K)
    keras_logits = model(normalised(model, pixels), training=False).numpy()[0]
    np.testing.assert_allclose(seg.logits(pixels, full_resolution=True), keras_logits, atol=1e-4)
    labels = seg.predict(pixels)
    assert labels.dtype == np.uint8 and np.mean(labels == np.argmax(keras_logits, -1)) > 0.999
    # Another image size: one resize from the reduced logits straight to it.
    big = image(3 * H + 1, 2 * W - 3, seed=10)
    np.testing.assert_array_equal(seg.predict(big), np.argmax(resize_bilinear(seg.logits(big), big.shape[:2]), -1))
    assert seg.predict(big, upsample="nearest").shape == big.shape[:2]


def test_host_upsample_int8(upsampling_model, tmp_path):
    model = upsampling_model
    calibration = normalize_np(np.random.default_rng(1).integers(0, 256, size=(8, H, W, 3)),
                               model.kerasseg_metadata.mean, model.kerasseg_metadata.std)
    path = to_tflite(model, tmp_path / "up4_int8.tflite", "int8", representative_data=calibration,
                     num_calibration_samples=8, host_upsample=True, verbose=False)
    seg = Segmenter(path)
    pixels = image(seed=11)
    keras_labels = np.argmax(model(normalised(model, pixels), training=False).numpy()[0], -1)
    assert seg.input_dtype == np.uint8 and np.mean(seg.predict(pixels) == keras_labels) > 0.9
    # The boundary-only argmax of the quantised logits equals the argmax of their full resize.
    big = image(3 * H + 1, 2 * W - 3, seed=12)
    np.testing.assert_array_equal(seg.predict(big), np.argmax(resize_bilinear(seg.logits(big), big.shape[:2]), -1))


def test_bad_host_upsample_record(upsampling_model, tmp_path):
    path = to_tflite(upsampling_model, tmp_path / "up4.tflite", host_upsample=True)
    sidecar = tmp_path / "up4.json"
    meta = json.loads(sidecar.read_text())
    meta["extra"]["export"]["host_upsample"] = {"method": "bicubic", "size": [H, W]}
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="host_upsample"):
        Segmenter(path)


def test_uint8_label_head(exported, tmp_path):
    model = exported["model"]
    path = to_tflite(model, tmp_path / "labels_u8.tflite", output="labels", label_dtype="uint8")
    seg = Segmenter(path)
    assert seg.output == "labels" and seg.output_dtype == np.uint8
    pixels = image(seed=12)
    labels = seg.predict(pixels)
    np.testing.assert_array_equal(labels, Segmenter(exported["paths"]["fp32", "labels"]).predict(pixels))
    assert seg.predict(image(50, 90, seed=13)).shape == (50, 90)


def test_benchmark_library(exported):
    from tflite.benchmark import benchmark, format_table

    paths = [exported["paths"]["fp32", "logits"], exported["paths"]["int8", "logits"]]
    rows = benchmark(paths, num_threads=1, runs=3, warmup=1)
    assert [r["path"] for r in rows] == [str(p) for p in paths]
    assert rows[0]["speedup"] == 1.0 and rows[1]["input_dtype"] == "uint8"
    assert all(r["median_ms"] > 0 and r["p90_ms"] >= r["median_ms"] and r["runs"] == 3 for r in rows)
    assert rows[1]["speedup"] == pytest.approx(rows[0]["median_ms"] / rows[1]["median_ms"])
    table = format_table(rows)
    assert "speed-up" in table and "fp32_logits.tflite" in table and "×1.00" in table
    with pytest.raises(ValueError, match="runs"):
        benchmark(paths, runs=0)
    with pytest.raises(ValueError, match="at least one"):
        benchmark([])


def test_end_to_end_and_frame_folder(exported, tmp_path):
    from tflite.benchmark import end_to_end, format_end_to_end, segment_folder

    path = exported["paths"]["int8", "logits"]
    row = end_to_end(path, (45, 70), num_threads=1, runs=2, warmup=1)
    assert row["frame"] == "random" and row["frame_size"] == [45, 70] and row["ratio"] > 0
    assert set(row["split_ms"]) == {"preprocess", "inference", "postprocess"}
    frame_file = tmp_path / "frames" / "street.png"
    frame_file.parent.mkdir()
    Image.fromarray(image(30, 50, seed=21)).save(frame_file)
    # A real frame is resized to the requested camera size; without one it keeps its own.
    row = end_to_end(path, (60, 100), num_threads=1, runs=2, warmup=1, frame=frame_file)
    assert row["frame"] == "street.png" and row["frame_size"] == [60, 100]
    assert "(street.png)" in format_end_to_end(row)
    assert end_to_end(path, None, num_threads=1, runs=1, warmup=0, frame=frame_file)["frame_size"] == [30, 50]
    with pytest.raises(ValueError, match="Expected a uint8 \\(H, W, 3\\) frame"):
        end_to_end(path, None, runs=1, frame=np.zeros((4, 4), np.uint8))
    Image.fromarray(image(20, 40, seed=22)).save(tmp_path / "frames" / "next.jpg")
    done = segment_folder(path, tmp_path / "frames", num_threads=1)
    assert done["frames"] == 2 and [lab.shape for lab in done["labels"]] == [(20, 40), (30, 50)]
    np.testing.assert_array_equal(done["labels"][1], Segmenter(path).predict(load_image(frame_file)))


def test_benchmark_cli_never_imports_tensorflow(exported, tmp_path):
    out_json = tmp_path / "bench.json"
    paths = [str(exported["paths"][key]) for key in (("fp32", "logits"), ("int8", "logits"), ("int8", "labels"))]
    script = f"""
import runpy, sys
sys.argv = ["benchmark.py", *{paths!r}, "--threads", "1", "--runs", "2", "--warmup", "1", "--json", {str(out_json)!r},
            "--frame-size", "45", "70", "--host-threads", "2"]
try:
    runpy.run_path({os.path.join(ROOT, "tflite", "benchmark.py")!r}, run_name="__main__")
except SystemExit as e:
    assert e.code == 0, e.code
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras", "kerasseg"))
print("HEAVY", heavy)
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "HEAVY []" in result.stdout and "speed-up" in result.stdout
    rows = json.loads(out_json.read_text())
    assert len(rows) == 6 and rows[0]["speedup"] == 1.0 and rows[2]["input_dtype"] == "uint8"
    assert [r["host_threads"] for r in rows[3:]] == [2, 2, 2] and "host work on 2 threads" in result.stdout
    missing = subprocess.run([sys.executable, os.path.join(ROOT, "tflite", "benchmark.py"),
                              str(tmp_path / "missing.tflite")], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "missing.tflite" in missing.stderr


# --- the fast paths of the runtime equal the straightforward computations -----------------------------------------

def straightforward_resize(array, size):
    """The plain form of resize_bilinear: TensorFlow's half-pixel taps, horizontal pass first, in float32."""
    from tflite.runtime import _taps

    top, bottom, y_frac = _taps(size[0], array.shape[0])
    left, right, x_frac = _taps(size[1], array.shape[1])

    def horizontal(rows):
        lo, hi = array[rows][:, left].astype(np.float32), array[rows][:, right].astype(np.float32)
        return lo + (hi - lo) * x_frac[None, :, None]

    upper, lower = horizontal(top), horizontal(bottom)
    return upper + (lower - upper) * y_frac[:, None, None]


def pillow_bilinear_labels(scores, size):
    """Argmax of float scores resized by Pillow's BILINEAR one channel at a time (ties: the first class)."""
    best = np.full(size, -np.inf, np.float32)
    labels = np.zeros(size, np.int64)
    for c in range(scores.shape[-1]):
        channel = np.asarray(Image.fromarray(np.ascontiguousarray(scores[..., c], np.float32)).resize(
            size[::-1], Image.BILINEAR))
        better = channel > best
        best[better], labels[better] = channel[better], c
    return labels


def score_map(rng, shape, classes, dtype):
    """Scores with regions (some 1 pixel wide), exact ties between classes, and the output's integer range."""
    h, w = shape
    info = np.iinfo(dtype)
    scores = rng.integers(info.min, info.min + 40, size=(h, w, classes))
    region = rng.integers(0, classes, size=(h // 3 + 1, w // 3 + 1))
    winner = np.repeat(np.repeat(region, 3, 0), 3, 1)[:h, :w]
    winner[:, w // 2] = rng.integers(0, classes, size=h)  # a column 1 pixel wide
    winner[h // 2, :] = rng.integers(0, classes, size=w)  # and a row
    np.put_along_axis(scores, winner[..., None], info.max - 10, axis=-1)
    runner_up = (winner + 1 + rng.integers(0, classes - 1, size=(h, w))) % classes
    tie = rng.random((h, w)) < 0.2  # a second class equal to the best one
    np.put_along_axis(scores, runner_up[..., None], np.where(tie, info.max - 10, info.max - 11)[..., None], axis=-1)
    return scores.astype(dtype)


@pytest.mark.parametrize("src, dst", [((5, 7), (13, 20)), ((4, 4), (4, 9)), ((1, 3), (7, 3)), ((6, 5), (6, 5)),
                                      ((3, 8), (1000, 9))])
def test_pillow_taps_reproduce_pillow_bit_for_bit(src, dst):
    from tflite.runtime import _lerp_pillow, _pillow_taps

    channel = np.random.default_rng(20).normal(size=src).astype(np.float32)
    expected = np.asarray(Image.fromarray(channel).resize(dst[::-1], Image.BILINEAR))
    r0, r1, wy0, wy1 = _pillow_taps(dst[0], src[0])
    c0, c1, wx0, wx1 = _pillow_taps(dst[1], src[1])
    rows = _lerp_pillow(channel[:, c0], channel[:, c1], wx0, wx1)
    np.testing.assert_array_equal(_lerp_pillow(rows[r0], rows[r1], wy0[:, None], wy1[:, None]), expected)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("src, dst", [((17, 23), (40, 61)), ((9, 9), (9, 31)), ((2, 5), (3, 5)), ((16, 32), (35, 67))])
def test_boundary_only_bilinear_argmax_equals_the_full_resize(dtype, src, dst):
    from tflite.runtime import _UpsampledArgmax

    rng = np.random.default_rng(sum(src + dst))
    raw = score_map(rng, src, 5, dtype)
    quantization = (np.float32(0.037), 3)
    scores = (raw.astype(np.float32) - np.float32(3)) * np.float32(0.037)
    for rule, full in (("pillow", lambda: pillow_bilinear_labels(scores, dst)),
                       ("tensorflow", lambda: np.argmax(resize_bilinear(scores, dst), -1))):
        upsample = _UpsampledArgmax(src, dst, rule, 5, quantization, np.uint8, raw.dtype)
        upsample.DENSE_SHARE = 1.0  # the boundary path even where most blocks are boundaries
        labels = upsample(raw, dense=None)
        assert labels.dtype == np.uint8
        np.testing.assert_array_equal(labels, full())
    # Float scores (a float model) with exact ties and a gap of one float32 step.
    floats = scores.copy()
    floats[..., 1] = np.where(rng.random(src) < 0.3, np.nextafter(floats[..., 0], np.inf), floats[..., 1])
    upsample = _UpsampledArgmax(src, dst, "pillow", 5, None, np.uint8, floats.dtype)
    upsample.DENSE_SHARE = 1.0
    np.testing.assert_array_equal(upsample(floats, dense=None), pillow_bilinear_labels(floats, dst))


def test_tensorflow_rule_labels_equal_tf_image_resize():
    from tflite.runtime import _UpsampledArgmax

    raw = score_map(np.random.default_rng(21), (12, 20), 6, np.int8)
    scores = raw.astype(np.float32) * np.float32(0.05)
    upsample = _UpsampledArgmax((12, 20), (37, 45), "tensorflow", 6, (np.float32(0.05), 0), np.uint8, raw.dtype)
    upsample.DENSE_SHARE = 1.0
    expected = np.argmax(tf.image.resize(scores[None], (37, 45), method="bilinear").numpy()[0], -1)
    np.testing.assert_array_equal(upsample(raw, dense=None), expected)


@pytest.mark.parametrize("src, dst", [((37, 53), (16, 32)), ((9, 11), (20, 30)), ((20, 30), (20, 7))])
def test_resizer_equals_the_straightforward_resize(src, dst):
    rng = np.random.default_rng(22)
    pixels = rng.integers(0, 256, size=(*src, 3)).astype(np.uint8)
    np.testing.assert_array_equal(resize_bilinear(pixels, dst), straightforward_resize(pixels, dst))
    scores = rng.normal(size=(*src, 5)).astype(np.float32)
    np.testing.assert_array_equal(resize_bilinear(scores, dst), straightforward_resize(scores, dst))


@pytest.mark.parametrize("aspect, host_threads", [("stretch", 1), ("stretch", 3), ("letterbox", 2)])
@pytest.mark.parametrize("key", [("fp32", "logits"), ("int8", "logits"), ("int8", "probabilities")])
def test_predict_equals_the_straightforward_path(exported, key, aspect, host_threads, monkeypatch):
    from tflite.runtime import _UpsampledArgmax

    seg = Segmenter(exported["paths"][key], aspect=aspect, host_threads=host_threads)
    assert seg.host_threads == host_threads
    for size, seed in (((3 * H, 2 * W), 23), ((H + 7, 3 * W - 5), 24), ((H // 2, W + 3), 25), ((H, W), 26)):
        frame = image(*size, seed=seed)
        pixels = straightforward_resize(frame, (H, W)) if aspect == "stretch" else None
        x = seg.preprocess(frame)
        if pixels is not None:
            expected = pixels if x.dtype == np.float32 else np.clip(np.rint(pixels), 0, 255).astype(x.dtype)
            np.testing.assert_array_equal(x[0], expected)
            # The resizer's buffers are reused; only a frame already at the model's size goes in as it is.
            assert np.shares_memory(x, seg.preprocess(frame)) == (size == (H, W) and x.dtype == frame.dtype)
        scores = seg.run(x)
        if seg._box is not None:
            scores = seg._crop_padding(scores)
        full = pillow_bilinear_labels(scores, size)
        np.testing.assert_array_equal(seg.predict(frame), full)
        with monkeypatch.context() as patch:  # the boundary path however many boundaries the small model has
            patch.setattr(_UpsampledArgmax, "DENSE_SHARE", 1.0)
            np.testing.assert_array_equal(seg.predict(frame), full)
        expected = np.asarray(Image.fromarray(np.argmax(scores, -1).astype(np.int32)).resize(size[::-1],
                                                                                            Image.NEAREST))
        np.testing.assert_array_equal(seg.predict(frame, upsample="nearest"), expected)

