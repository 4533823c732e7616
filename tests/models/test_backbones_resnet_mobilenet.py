"""ResNet and MobileNetV2 backbones: dilation schedule, endpoints, and exact keras.applications weight loading.

No network access: the "ImageNet" weights are those of a randomly initialised keras.applications model whose batch
norm statistics and convolution biases are randomised before saving, so that bias folding and batch norm loading are
really exercised.
"""

import keras
import numpy as np
import pytest

from kerasseg.backbones import ENDPOINTS, WEIGHT_SOURCES, build_backbone, load_backbone_weights, stride_schedule
from kerasseg.backbones.mobilenet_v2 import mobilenet_v2
from kerasseg.backbones.resnet import resnet
from kerasseg.preprocessing import normalization_constants
from tests.model_cases import free_keras_memory  # noqa: F401 (autouse fixture)

RESNET_REF_ENDPOINTS = {"stride2": "conv1_relu", "stride4": "conv2_block3_out", "stride8": "conv3_block4_out",
                        "stride16": "conv4_block6_out", "stride32": "conv5_block3_out"}
MOBILENET_REF_ENDPOINTS = {"stride2": "expanded_conv_project_BN", "stride4": "block_2_add", "stride8": "block_5_add",
                           "stride16": "block_12_add", "stride32": "block_16_project_BN"}


def _randomise_and_save(model, path, seed):
    # Non-trivial statistics, offsets and biases; variances kept near 1 so that 50 layers stay finite.
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c), rng.normal(0, 0.2, c),
                               rng.uniform(0.5, 2.0, c)])
        elif isinstance(layer, keras.layers.Conv2D) and layer.use_bias:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.2, bias.shape)])
    model.save_weights(path)
    return path


def _relative_error(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _endpoint_model(inputs, endpoints):
    return keras.Model(inputs, {k: endpoints[k] for k in ENDPOINTS})


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory):
    ref = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(64, 64, 3))
    path = _randomise_and_save(ref, str(tmp_path_factory.mktemp("w") / "resnet50.weights.h5"), seed=0)
    x = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    caffe = keras.applications.resnet.preprocess_input(x.copy())
    ref_out = keras.Model(ref.input, [ref.get_layer(RESNET_REF_ENDPOINTS[k]).output for k in ENDPOINTS]).predict(
        caffe, verbose=0)
    return path, x, caffe, dict(zip(ENDPOINTS, ref_out))


def test_stride_schedule_replaces_late_strides_by_dilation():
    resnet_strides = (1, 2, 2, 2)
    assert stride_schedule(resnet_strides, 32, initial_stride=4) == [(1, 1), (2, 1), (2, 1), (2, 1)]
    assert stride_schedule(resnet_strides, 16, initial_stride=4) == [(1, 1), (2, 1), (2, 1), (1, 2)]
    assert stride_schedule(resnet_strides, 8, initial_stride=4) == [(1, 1), (2, 1), (1, 2), (1, 4)]
    mobilenet_strides = (1, 2, 2, 2, 1, 2, 1)
    assert stride_schedule(mobilenet_strides, 16, 2) == [(1, 1), (2, 1), (2, 1), (2, 1), (1, 1), (1, 2), (1, 2)]
    assert stride_schedule(mobilenet_strides, 8, 2) == [(1, 1), (2, 1), (2, 1), (1, 2), (1, 2), (1, 4), (1, 4)]


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_resnet_endpoints_keep_nominal_names(output_stride):
    inputs = keras.Input((64, 96, 3))
    eps = resnet(inputs, 50, output_stride=output_stride, multi_grid=(1, 2, 4) if output_stride < 32 else None)
    channels = {"stride2": 64, "stride4": 256, "stride8": 512, "stride16": 1024, "stride32": 2048}
    for key, c in channels.items():
        stride = min(int(key[len("stride"):]), output_stride)
        assert tuple(eps[key].shape[1:]) == (64 // stride, 96 // stride, c), key
    model = keras.Model(inputs, eps["stride32"])
    conv4 = model.get_layer("conv4_block2_2_conv").dilation_rate
    conv5 = [model.get_layer(f"conv5_block{i}_2_conv").dilation_rate[0] for i in (1, 2, 3)]
    assert conv4 == ((2, 2) if output_stride == 8 else (1, 1))
    assert conv5 == {8: [4, 8, 16], 16: [2, 4, 8], 32: [1, 1, 1]}[output_stride]


def test_resnet_convolutions_have_no_bias_and_deep_stem_layout():
    inputs = keras.Input((64, 64, 3))
    model = keras.Model(inputs, resnet(inputs, 101, stem="deep")["stride32"])
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 3 + 33 * 3 + 4  # deep stem + 33 bottlenecks + 4 projection shortcuts
    assert not any(layer.use_bias for layer in convs)
    assert [(model.get_layer(f"conv1_{i}_conv").filters, model.get_layer(f"conv1_{i}_conv").strides)
            for i in (1, 2, 3)] == [(64, (2, 2)), (64, (1, 1)), (128, (1, 1))]
    assert model.get_layer("conv2_block1_1_conv").kernel.shape == (1, 1, 128, 64)


def test_mobilenet_v2_endpoints_and_dilation():
    inputs = keras.Input((64, 64, 3))
    eps = mobilenet_v2(inputs, output_stride=16)
    shapes = {k: tuple(v.shape[1:]) for k, v in eps.items()}
    assert shapes == {"stride2": (32, 32, 16), "stride4": (16, 16, 24), "stride8": (8, 8, 32),
                      "stride16": (4, 4, 96), "stride32": (4, 4, 320)}
    model = keras.Model(inputs, eps["stride32"])
    assert model.get_layer("block_13_depthwise").strides == (1, 1)
    assert [model.get_layer(f"block_{i}_depthwise").dilation_rate[0] for i in (12, 13, 14, 16)] == [1, 2, 2, 2]
    with pytest.raises(ValueError, match=r"Expected output_stride .*Received: output_stride=4"):
        mobilenet_v2(keras.Input((64, 64, 3)), output_stride=4)


def test_resnet50_loads_keras_applications_weights_exactly(resnet50_file):
    path, _, caffe, ref = resnet50_file
    inputs = keras.Input((64, 64, 3))
    model = _endpoint_model(inputs, resnet(inputs, 50))
    report = load_backbone_weights(model, "resnet50", path)
    # Every convolution of keras.applications carries a bias: all 53 are folded, nothing skipped or left over.
    assert len(report.folded_biases) == 53
    assert report.skipped == {} and report.unused == []
    assert report.input_conversion is None
    ours = model.predict(caffe, verbose=0)
    for key in ENDPOINTS:
        assert _relative_error(ours[key], ref[key]) < 1e-4, key


def test_resnet_first_convolution_is_converted_to_the_model_normalization(resnet50_file):
    path, pixels, _, ref = resnet50_file
    inputs = keras.Input((64, 64, 3))
    model = _endpoint_model(inputs, resnet(inputs, 50))
    report = load_backbone_weights(model, "resnet50", path, normalization="imagenet")
    assert "conv1_conv" in report.input_conversion
    mean, std = normalization_constants("imagenet")
    ours = model.predict((pixels - mean) / std, verbose=0)
    # Exact away from the zero-padded border, where the two preprocessings pad different grey values.
    inner = (slice(None), slice(2, -2), slice(2, -2))
    assert _relative_error(ours["stride2"][inner], ref["stride2"][inner]) < 1e-4
    assert _relative_error(ours["stride32"], ref["stride32"]) < 1e-2
    # Without the conversion the same inputs give other features: the test can tell the two apart.
    load_backbone_weights(model, "resnet50", path)
    assert _relative_error(model.predict((pixels - mean) / std, verbose=0)["stride2"][inner],
                           ref["stride2"][inner]) > 1e-2


def test_deep_stem_loads_everything_that_matches_and_reports_the_rest(resnet50_file):
    path, *_ = resnet50_file
    inputs = keras.Input((64, 64, 3))
    model = _endpoint_model(inputs, resnet(inputs, 50, stem="deep", output_stride=8))
    before = model.get_layer("conv1_1_conv").get_weights()[0].copy()
    report = load_backbone_weights(model, "resnet50", path, normalization="imagenet")
    assert sorted(report.skipped) == ["conv2_block1_0_bn", "conv2_block1_0_conv", "conv2_block1_1_bn",
                                      "conv2_block1_1_conv"]
    assert report.unused == ["conv1_bn", "conv1_conv"]
    assert report.input_conversion is None
    assert len(report.loaded) == 2 * 53 - 2 - 4
    np.testing.assert_array_equal(model.get_layer("conv1_1_conv").get_weights()[0], before)
    ref = keras.applications.ResNet50(weights=path, include_top=False, input_shape=(64, 64, 3))
    np.testing.assert_array_equal(model.get_layer("conv5_block3_2_conv").get_weights()[0],
                                  ref.get_layer("conv5_block3_2_conv").get_weights()[0])
    ours_bn = model.get_layer("conv5_block3_2_bn").get_weights()
    ref_bn = ref.get_layer("conv5_block3_2_bn").get_weights()
    bias = ref.get_layer("conv5_block3_2_conv").get_weights()[1]
    np.testing.assert_allclose(ours_bn[2], ref_bn[2] - bias, rtol=1e-6, atol=1e-6)


def test_mobilenet_v2_loads_keras_applications_weights_exactly(tmp_path):
    ref = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(64, 64, 3))
    path = _randomise_and_save(ref, str(tmp_path / "mobilenetv2.weights.h5"), seed=2)
    x = np.random.default_rng(3).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    expected = keras.Model(ref.input, [ref.get_layer(MOBILENET_REF_ENDPOINTS[k]).output for k in ENDPOINTS]).predict(
        x, verbose=0)
    inputs = keras.Input((64, 64, 3))
    model = _endpoint_model(inputs, build_backbone("mobilenetv2", inputs))
    report = load_backbone_weights(model, "mobilenetv2", path, normalization="symmetric")
    assert report.unused == ["Conv_1", "Conv_1_bn"] and report.skipped == {} and report.folded_biases == []
    assert len(report.loaded) == len([w for w in ref.layers if w.weights]) - 2
    ours = model.predict(x, verbose=0)
    for key, want in zip(ENDPOINTS, expected):
        assert _relative_error(ours[key], want) < 1e-4, key


def test_weight_source_errors():
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, resnet(inputs, 50)["stride32"])
    with pytest.raises(ValueError, match=r"Expected weights to be None, 'imagenet' or the path .*Received: "
                                         r"weights='/nonexistent.weights.h5'"):
        load_backbone_weights(model, "resnet50", "/nonexistent.weights.h5")
    with pytest.raises(ValueError, match=r"Expected backbone to be one of .*Received: backbone='vgg16'"):
        load_backbone_weights(model, "vgg16", "imagenet")
    assert set(WEIGHT_SOURCES) == {"resnet50", "resnet101", "mobilenetv2", "efficientnet_lite0"}
    with pytest.raises(ValueError, match=r"Expected multi_grid to be 3 positive integers .*Received: multi_grid="):
        resnet(keras.Input((32, 32, 3)), 50, multi_grid=(1, 2))
    with pytest.raises(ValueError, match=r"Expected stem to be one of .*Received: stem='tiny'"):
        resnet(keras.Input((32, 32, 3)), 50, stem="tiny")
    with pytest.raises(ValueError, match=r"Expected multi_grid=None for backbone 'mobilenetv2'"):
        build_backbone("mobilenetv2", keras.Input((32, 32, 3)), multi_grid=(1, 2, 4))
