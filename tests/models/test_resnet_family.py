"""PSPNet, DeepLab v3 and DeepLab v3+: reference parameter counts, structure, validation, export and round trips.

Big models are built at small input sizes (parameter counts do not depend on the size) and counted without running.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasseg
from tests.model_cases import EDGE_UNFRIENDLY, free_keras_memory  # noqa: F401 (autouse fixture)


def _count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _main_output_count(model):
    # The model without its auxiliary head: same layers, first output only.
    return _count(keras.Model(model.inputs, model.outputs[0]))


@pytest.mark.parametrize("backbone, without_aux, with_aux", [
    ("resnet50", 46_715_347, 49_080_038),
    ("resnet101", 65_707_475, 68_072_166),
])
def test_pspnet_parameter_counts(backbone, without_aux, with_aux):
    model = kerasseg.build_model("pspnet", num_classes=19, input_shape=(48, 48, 3), backbone=backbone, aux=True)
    assert (_main_output_count(model), _count(model)) == (without_aux, with_aux)


def test_pspnet_without_aux_is_one_output_with_the_reference_count():
    model = kerasseg.build_model("pspnet", num_classes=19, input_shape=(48, 96, 3))
    assert len(model.outputs) == 1 and _count(model) == 46_715_347
    assert not any(layer.name.startswith("aux_") for layer in model.layers)


@pytest.mark.parametrize("backbone, output_stride, expected", [
    ("resnet50", 16, 39_048_533),
    ("resnet50", 8, 39_048_533),
    ("resnet101", 16, 58_040_661),
])
def test_deeplabv3_parameter_counts(backbone, output_stride, expected):
    model = kerasseg.build_model("deeplabv3", num_classes=21, input_shape=(64, 64, 3), backbone=backbone,
                                 output_stride=output_stride)
    assert _count(model) == expected


def test_deeplabv3plus_mobilenetv2_parameter_count():
    # MobileNetV2 without its final 1×1 to 1280: 1,811,712. ASPP on 320 channels with separable atrous branches:
    # 1×1 82,432 + 3 × (2,880 + 640 + 81,920 + 512) + pooling 82,432 + projection 328,192 = 750,912. Decoder:
    # 1×1 24→48 1,248, separable 304→256 81,680 and 256→256 68,864, classifier 256×19+19 = 4,883.
    model = kerasseg.build_model("deeplabv3plus", num_classes=19, input_shape=(64, 64, 3))
    assert _count(model) == 1_811_712 + 750_912 + 1_248 + 81_680 + 68_864 + 4_883 == 2_719_299


def test_deeplabv3plus_head_widths():
    # 128-channel ASPP: 1×1 41,216 + 3 × (2,880 + 640 + 40,960 + 256) + pooling 41,216 + projection 5 × 128 × 128
    # + 256 = 298,816. 64-channel decoder: 1×1 24→48 1,248, separable 176→64 13,328 and 64→64 4,928, classifier
    # 64×19+19 = 1,235.
    model = kerasseg.build_model("deeplabv3plus", num_classes=19, input_shape=(64, 64, 3), aspp_filters=128,
                                 decoder_filters=64)
    assert _count(model) == 1_811_712 + 298_816 + 1_248 + 13_328 + 4_928 + 1_235 == 2_131_267
    assert model.get_layer("decoder_concat").output.shape[-1] == 128 + 48
    assert model.get_layer("classifier").input.shape[-1] == 64


def test_no_bias_before_batch_norm_only_classifiers_have_one():
    for name, kwargs in [("pspnet", {"aux": True}), ("deeplabv3plus", {}), ("deeplabv3", {"separable": True})]:
        model = kerasseg.build_model(name, num_classes=3, input_shape=(48, 48, 3) if name == "pspnet" else
                                     (64, 64, 3), **kwargs)
        biased = sorted(layer.name for layer in model.layers if getattr(layer, "use_bias", False)
                        and isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)))
        assert biased == (["aux_classifier", "classifier"] if name == "pspnet" else ["classifier"]), name
        keras.backend.clear_session()


def test_pspnet_structure_and_outputs():
    keras.utils.set_random_seed(0)
    model = kerasseg.build_model("pspnet", num_classes=5, input_shape=(96, 144, 3), aux=True)
    assert model.get_layer("psp_concat").output.shape[1:] == (12, 18, 4096)
    assert [model.get_layer(f"psp_bin{b}_pool").pool_size for b in (1, 2, 3, 6)] == [(12, 18), (6, 9), (4, 6),
                                                                                       (2, 3)]
    assert model.get_layer("conv4_block1_2_conv").dilation_rate == (2, 2)
    assert model.get_layer("conv5_block3_2_conv").dilation_rate == (4, 4)
    assert model.get_layer("aux_head_conv").input.shape[-1] == 1024
    assert [model.get_layer(n).rate for n in ("head_dropout", "aux_head_dropout")] == [0.1, 0.1]
    main, aux = model.predict(np.zeros((1, 96, 144, 3), "float32"), verbose=0)
    assert main.shape == aux.shape == (1, 96, 144, 5)
    assert list(model.output_names) == ["logits", "aux_logits"]


def test_deeplab_structure_and_outputs():
    model = kerasseg.build_model("deeplabv3", num_classes=4, input_shape=(64, 96, 3), output_stride=8,
                                 backbone="resnet50")
    assert [model.get_layer(f"aspp_atrous{i}_conv").dilation_rate[0] for i in (1, 2, 3)] == [12, 24, 36]
    assert [model.get_layer(f"conv5_block{i}_2_conv").dilation_rate[0] for i in (1, 2, 3)] == [4, 8, 16]
    assert model.get_layer("aspp_concat").output.shape[1:] == (8, 12, 1280)
    assert model.get_layer("aspp_pool").pool_size == (8, 12)
    assert model.predict(np.zeros((2, 64, 96, 3), "float32"), verbose=0).shape == (2, 64, 96, 4)
    keras.backend.clear_session()
    plus = kerasseg.build_model("deeplabv3plus", num_classes=4, input_shape=(64, 96, 3))
    assert [plus.get_layer(f"aspp_atrous{i}_depthwise").dilation_rate[0] for i in (1, 2, 3)] == [6, 12, 18]
    assert plus.get_layer("decoder_concat").output.shape[1:] == (16, 24, 256 + 48)
    assert plus.get_layer("decoder_low_level_conv").input.shape[-1] == 24
    assert plus.predict(np.zeros((1, 64, 96, 3), "float32"), verbose=0).shape == (1, 64, 96, 4)
    assert kerasseg.get_model_info("deeplabv3plus").normalization == "symmetric"
    assert kerasseg.get_model_info("deeplabv3").normalization == "imagenet"


@pytest.mark.parametrize("name, kwargs, pattern", [
    ("pspnet", {"input_shape": (100, 100, 3)}, r"Expected .*multiples of 48.*Received: input_shape=\(100, 100, 3\)"),
    ("pspnet", {"input_shape": (144, 96, 3), "output_stride": 16},
     r"Expected .*multiples of 96.*Received: input_shape=\(144, 96, 3\)"),
    ("pspnet", {"input_shape": (96, 96, 3), "backbone": "mobilenetv2"},
     r"Expected backbone to be one of \('resnet50', 'resnet101'\). Received: backbone='mobilenetv2'"),
    ("pspnet", {"input_shape": (96, 96, 3), "stem": "7x7"}, r"Expected stem .*Received: stem='7x7'"),
    ("deeplabv3", {"input_shape": (72, 72, 3)}, r"Expected .*multiples of the output stride 16.*Received: "
                                                r"input_shape=\(72, 72, 3\)"),
    ("deeplabv3", {"input_shape": (64, 64, 3), "output_stride": 32},
     r"Expected output_stride to be one of \(8, 16\). Received: output_stride=32"),
    ("deeplabv3", {"input_shape": (64, 64, 3), "backbone": "resnet18"},
     r"Expected backbone to be one of \('resnet50', 'resnet101', 'mobilenetv2', 'efficientnet_lite0'\). "
     r"Received: backbone='resnet18'"),
    ("deeplabv3plus", {"input_shape": (64, 64, 3), "multi_grid": (1, 2, 4)},
     r"Expected multi_grid=None with backbone 'mobilenetv2'.*Received: multi_grid=\(1, 2, 4\)"),
    ("deeplabv3plus", {"input_shape": (64, 64, 3), "backbone": "resnet50", "multi_grid": (1, 2)},
     r"Expected multi_grid to be 3 positive integers.*Received: multi_grid=\(1, 2\)"),
    ("deeplabv3plus", {"input_shape": (64, 64, 3), "aspp_filters": 0},
     r"Expected aspp_filters to be a positive integer.*Received: aspp_filters=0"),
    ("deeplabv3plus", {"input_shape": (64, 64, 3), "decoder_filters": 1.5},
     r"Expected decoder_filters to be a positive integer.*Received: decoder_filters=1.5"),
    ("deeplabv3plus", {"input_shape": (64, 64, 3), "backbone_weights": "missing.weights.h5"},
     r"Expected backbone_weights to be None, 'imagenet' or the path.*Received: backbone_weights='missing"),
])
def test_bad_arguments_have_clear_messages(name, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        kerasseg.build_model(name, num_classes=3, **kwargs)


def _tflite(model, shape):
    fn = tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec((1, *shape), tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    content = converter.convert()
    interpreter = tf.lite.Interpreter(model_content=content)
    return content, sorted({op["op_name"] for op in interpreter._get_ops_details()})


@pytest.mark.parametrize("name, kwargs, must_have", [
    # The ResNet models are ~150-190 MB flatbuffers: slow to convert.
    pytest.param("pspnet", {"input_shape": (96, 96, 3)},
                 {"AVERAGE_POOL_2D", "RESIZE_BILINEAR", "CONV_2D", "MAX_POOL_2D"}, marks=pytest.mark.slow),
    pytest.param("deeplabv3", {"input_shape": (64, 64, 3), "output_stride": 8},
                 {"AVERAGE_POOL_2D", "RESIZE_BILINEAR"}, marks=pytest.mark.slow),
    ("deeplabv3plus", {"input_shape": (64, 64, 3)}, {"DEPTHWISE_CONV_2D", "RESIZE_BILINEAR", "AVERAGE_POOL_2D"}),
])
def test_fp32_tflite_builtin_ops_without_edge_unfriendly_ones(name, kwargs, must_have):
    keras.utils.set_random_seed(0)
    model = kerasseg.build_model(name, num_classes=3, **kwargs)
    content, ops = _tflite(model, kwargs["input_shape"])
    assert must_have <= set(ops), ops
    assert not EDGE_UNFRIENDLY & set(ops), ops
    assert not [op for op in ops if op.startswith("Flex") or op in ("CUSTOM", "VAR_HANDLE", "READ_VARIABLE")], ops
    x = np.random.default_rng(0).normal(size=(1, *kwargs["input_shape"])).astype("float32")
    runner = tf.lite.Interpreter(model_content=content)
    runner.allocate_tensors()
    runner.set_tensor(runner.get_input_details()[0]["index"], x)
    runner.invoke()
    got = runner.get_tensor(runner.get_output_details()[0]["index"])
    want = model.predict(x, verbose=0)
    assert np.max(np.abs(got - want)) <= 1e-3 * max(1.0, float(np.max(np.abs(want))))


def test_pspnet_with_aux_roundtrips_in_safe_mode(tmp_path):
    model = kerasseg.build_model("pspnet", num_classes=3, input_shape=(48, 48, 3), aux=True)
    loaded = kerasseg.load_model(kerasseg.save_model(model, tmp_path / "psp.keras"), safe_mode=True)
    x = np.random.default_rng(0).normal(size=(1, 48, 48, 3)).astype("float32")
    for a, b in zip(model.predict(x, verbose=0), loaded.predict(x, verbose=0)):
        np.testing.assert_array_equal(a, b)
    assert loaded.kerasseg_metadata.model_name == "pspnet"


def test_tf_keras_builds_the_same_deeplabv3plus():
    import tf_keras

    from kerasseg.models.deeplab import deeplabv3plus

    a = deeplabv3plus(4, input_shape=(32, 32, 3))
    b = deeplabv3plus(4, input_shape=(32, 32, 3), keras_module=tf_keras)
    assert isinstance(b, tf_keras.Model)
    assert [w.shape for w in a.get_weights()] == [tuple(w.shape) for w in b.get_weights()]
    b.set_weights(a.get_weights())
    x = np.random.default_rng(0).normal(size=(1, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(a.predict(x, verbose=0), b.predict(x, verbose=0), atol=1e-4)


def test_builders_load_backbone_weights_from_a_file(tmp_path):
    ref = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(64, 64, 3))
    path = str(tmp_path / "mnv2.weights.h5")
    ref.save_weights(path)
    model = kerasseg.build_model("deeplabv3plus", num_classes=3, input_shape=(64, 64, 3), backbone_weights=path)
    report = model.backbone_weights_report
    assert report.skipped == {} and report.unused == ["Conv_1", "Conv_1_bn"]
    np.testing.assert_array_equal(model.get_layer("block_16_project").get_weights()[0],
                                  ref.get_layer("block_16_project").get_weights()[0])
