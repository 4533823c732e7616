"""VGG16 backbone: keras.applications layer names, endpoints, and weight loading from keras.applications files.

No network access: "ImageNet" weights are those of a randomly initialised ``keras.applications.VGG16`` (biases
randomised too, so that they are really copied) saved with ``save_weights``.
"""

import gc

import keras
import numpy as np
import pytest

import kerasseg
from kerasseg.backbones.vgg import VGG16_BLOCKS, load_vgg16_weights, vgg16_backbone
from kerasseg.preprocessing import normalization_constants
from tests.model_cases import free_keras_memory  # noqa: F401 (autouse fixture)

SIZE = 64
POOLS = [f"block{b}_pool" for b in range(1, 6)]


def _randomise_biases(model, seed):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.weights:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.1, bias.shape).astype("float32")])


@pytest.fixture(scope="module")
def notop_file(tmp_path_factory):
    """A keras.applications VGG16 include_top=False weights file, inputs, and the reference pool outputs."""
    ref = keras.applications.VGG16(weights=None, include_top=False, input_shape=(SIZE, SIZE, 3))
    _randomise_biases(ref, seed=0)
    path = str(tmp_path_factory.mktemp("w") / "vgg16_notop.weights.h5")
    ref.save_weights(path)
    pixels = np.random.default_rng(1).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    caffe = keras.applications.vgg16.preprocess_input(pixels.copy())
    probe = keras.Model(ref.input, [ref.get_layer(n).output for n in POOLS + ["block1_conv1"]])
    outputs = probe.predict(caffe, verbose=0)
    result = path, pixels, caffe, dict(zip(POOLS + ["block1_conv1"], outputs))
    del ref, probe
    keras.backend.clear_session()
    return result


def _backbone_model(batch_norm=False):
    inputs = keras.Input((SIZE, SIZE, 3))
    endpoints = vgg16_backbone(inputs, batch_norm=batch_norm)
    return keras.Model(inputs, endpoints), endpoints


def test_layers_match_keras_applications_names_and_shapes():
    ref = keras.applications.VGG16(weights=None, include_top=False, input_shape=(SIZE, SIZE, 3))
    model, _ = _backbone_model()
    ours = [(l.name, [tuple(w.shape) for w in l.weights]) for l in model.layers if "input" not in l.name]
    theirs = [(l.name, [tuple(w.shape) for w in l.weights]) for l in ref.layers if "input" not in l.name]
    assert ours == theirs
    assert len([l for l in model.layers if l.weights]) == sum(convs for _, convs in VGG16_BLOCKS) == 13


def test_endpoints_by_name_and_stride():
    _, endpoints = _backbone_model()
    channels = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}
    for block, c in channels.items():
        assert tuple(endpoints[f"block{block}"].shape[1:]) == (SIZE // 2 ** (block - 1),) * 2 + (c,)
        assert tuple(endpoints[f"pool{block}"].shape[1:]) == (SIZE // 2 ** block,) * 2 + (c,)
        assert endpoints[f"stride{2 ** block}"] is endpoints[f"pool{block}"]


def test_weights_file_gives_keras_applications_features(notop_file):
    path, _, caffe, ref = notop_file
    model, _ = _backbone_model()
    report = load_vgg16_weights(model, path)
    assert report.loaded == [f"block{b}_conv{i}" for b, (_, n) in enumerate(VGG16_BLOCKS, 1) for i in range(1, n + 1)]
    assert report.input_conversion is None and not report.skipped
    probe = keras.Model(model.input, [model.get_layer(n).output for n in POOLS])
    for name, out in zip(POOLS, probe.predict(caffe, verbose=0)):
        np.testing.assert_allclose(out, ref[name], rtol=1e-5, atol=1e-5 * np.abs(ref[name]).max(), err_msg=name)


def test_imagenet_normalised_inputs_reproduce_caffe_features(notop_file):
    # The builders load with normalization="imagenet": block1_conv1 is rewritten for (RGB - mean) / std inputs.
    path, pixels, _, ref = notop_file
    model, _ = _backbone_model()
    report = load_vgg16_weights(model, path, normalization="imagenet")
    assert "imagenet" in report.input_conversion
    mean, std = normalization_constants("imagenet")
    probe = keras.Model(model.input, [model.get_layer(n).output for n in ["block1_conv1"] + POOLS])
    outs = dict(zip(["block1_conv1"] + POOLS, probe.predict((pixels - mean) / std, verbose=0)))
    # Exact away from the border, where the zero padding stands for a slightly different grey.
    interior = (slice(None), slice(1, -1), slice(1, -1))
    np.testing.assert_allclose(outs["block1_conv1"][interior], ref["block1_conv1"][interior], rtol=1e-4, atol=1e-3)
    for name in POOLS:
        rel = np.abs(outs[name] - ref[name]).max() / np.abs(ref[name]).max()
        assert rel < 1e-2, (name, rel)


def test_segnet_encoder_loads_conv_weights_with_batch_norm(notop_file):
    path = notop_file[0]
    model = kerasseg.build_model("segnet", num_classes=3, input_shape=(SIZE, SIZE, 3), backbone_weights=path)
    ref = keras.applications.VGG16(weights=None, include_top=False, input_shape=(SIZE, SIZE, 3))
    ref.load_weights(path)
    for name in ("block2_conv1", "block5_conv3"):
        for ours, theirs in zip(model.get_layer(name).get_weights(), ref.get_layer(name).get_weights()):
            np.testing.assert_array_equal(ours, theirs)
    # The first convolution is converted for the "imagenet" normalisation, so it differs from the file's.
    first, first_ref = model.get_layer("block1_conv1").get_weights()[0], ref.get_layer("block1_conv1").get_weights()[0]
    assert not np.allclose(first, first_ref)
    assert model.backbone_weights_report.input_conversion
    assert "block1_conv1_bn" in [l.name for l in model.layers]


def test_fc6_fc7_initialised_from_include_top_file(tmp_path):
    ref = keras.applications.VGG16(weights=None, include_top=True)
    _randomise_biases(ref, seed=2)
    path = str(tmp_path / "vgg16_top.weights.h5")
    ref.save_weights(path)
    fc1_kernel, fc1_bias = ref.get_layer("fc1").get_weights()
    fc2_kernel, fc2_bias = ref.get_layer("fc2").get_weights()
    conv53 = ref.get_layer("block5_conv3").get_weights()
    del ref
    keras.backend.clear_session()
    gc.collect()

    model = kerasseg.build_model("fcn32s", num_classes=2, input_shape=(SIZE, SIZE, 3), backbone_weights=path)
    fc6_kernel, fc6_bias = model.get_layer("fc6").get_weights()
    assert fc6_kernel.shape == (7, 7, 512, 4096)
    # fc1 row (r, c, ch) of the flattened 7×7×512 pool5 map is fc6 kernel position (r, c, ch).
    for r, c, ch in ((0, 0, 0), (2, 3, 100), (6, 6, 511)):
        np.testing.assert_array_equal(fc6_kernel[r, c, ch], fc1_kernel[(r * 7 + c) * 512 + ch])
    np.testing.assert_array_equal(fc6_bias, fc1_bias)
    fc7_kernel, fc7_bias = model.get_layer("fc7").get_weights()
    np.testing.assert_array_equal(fc7_kernel[0, 0], fc2_kernel)
    np.testing.assert_array_equal(fc7_bias, fc2_bias)
    for ours, theirs in zip(model.get_layer("block5_conv3").get_weights(), conv53):
        np.testing.assert_array_equal(ours, theirs)
    assert model.backbone_weights_report.unused == ["predictions"]


def test_fcn_with_notop_file_reports_random_fc_layers(notop_file):
    model = kerasseg.build_model("fcn16s", num_classes=2, input_shape=(SIZE, SIZE, 3), backbone_weights=notop_file[0])
    report = model.backbone_weights_report
    assert sorted(report.skipped) == ["fc6", "fc7"]
    assert "block5_conv3" in report.loaded and "fc6" not in report.loaded


def test_bad_backbone_weights_are_rejected(tmp_path):
    missing = str(tmp_path / "missing.weights.h5")
    with pytest.raises(ValueError, match=r"Expected backbone_weights .*Received: backbone_weights='.*missing"):
        kerasseg.build_model("segnet", num_classes=2, input_shape=(SIZE, SIZE, 3), backbone_weights=missing)
    with pytest.raises(ValueError, match=r"Expected 3 input channels .*Received: input_shape=\(64, 64, 1\)"):
        kerasseg.build_model("fcn8s", num_classes=2, input_shape=(SIZE, SIZE, 1), backbone_weights="imagenet")
