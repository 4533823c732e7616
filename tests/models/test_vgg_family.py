"""FCN-32s/16s/8s, SegNet and U-Net: reference parameter counts, shapes, validation, unpooling, bilinear
upsampling, serialisation, tf_keras builds and builtin-only TFLite conversion."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasseg
from kerasseg.analysis import count_params
from kerasseg.layers import BilinearUpsamplingInitializer, MaxUnpooling2D
from kerasseg.layers.bilinear import bilinear_kernel
from kerasseg.models.unet import unet_valid_output_size
from tests.model_cases import free_keras_memory  # noqa: F401 (autouse fixture)
from tests.plain_conversion import plain_conversion

# Small FCNs narrow fc6 / fc7: same graph, a fraction of the 134M parameters.
SMALL = {
    "fcn32s": {"num_classes": 3, "input_shape": (64, 96, 3), "fc_filters": 32},
    "fcn16s": {"num_classes": 3, "input_shape": (64, 96, 3), "fc_filters": 32},
    "fcn8s": {"num_classes": 3, "input_shape": (64, 96, 3), "fc_filters": 32},
    "segnet": {"num_classes": 4, "input_shape": (64, 96, 3)},
    "unet": {"num_classes": 2, "input_shape": (188, 204, 3), "base_filters": 4},
    "unet_padded": {"num_classes": 2, "input_shape": (64, 80, 3), "base_filters": 4},
}


def _images(shape, batch=1, seed=0):
    return np.random.default_rng(seed).normal(size=(batch,) + tuple(shape)).astype("float32")


# --- reference parameter counts -------------------------------------------------------------------------------

def test_fcn_parameter_arithmetic():
    vgg_convs = 14_714_688
    fc6 = 7 * 7 * 512 * 4096 + 4096
    fc7 = 4096 * 4096 + 4096
    assert (fc6, fc7) == (102_764_544, 16_781_312)
    score = lambda c_in: c_in * 21 + 21  # noqa: E731
    fcn32s = vgg_convs + fc6 + fc7 + score(4096)
    assert fcn32s == 134_346_581
    # Every upsampling is a fixed bilinear kernel: only the skip score layers are added.
    assert fcn32s + score(512) == 134_357_354
    assert fcn32s + score(512) + score(256) == 134_362_751


@pytest.mark.parametrize("name, expected", [("fcn32s", 134_346_581), ("fcn16s", 134_357_354),
                                            ("fcn8s", 134_362_751)])
def test_fcn_trainable_parameters(name, expected):
    model = kerasseg.build_model(name, num_classes=21, input_shape=(64, 64, 3))
    assert count_params(model) == expected
    upsamplings = [l for l in model.layers if isinstance(l, keras.layers.Conv2DTranspose)]
    assert len(upsamplings) == {"fcn32s": 1, "fcn16s": 2, "fcn8s": 3}[name]
    assert not any(l.trainable for l in upsamplings)


def test_segnet_trainable_parameters():
    # Encoder: VGG16 convs with bias (14,714,688) + 13 BN (2 x 4,224). Decoder: 12 conv + bias + BN
    # (14,708,736 + 3 x 3,712), then the 3x3 classifier with bias (64 * 9 * classes + classes).
    encoder = 14_714_688 + 2 * 4_224
    decoder = 14_708_736 + 3 * 3_712
    for classes, expected in ((11, 29_449_355), (21, 29_455_125)):
        assert encoder + decoder + 576 * classes + classes == expected
        model = kerasseg.build_model("segnet", num_classes=classes, input_shape=(352, 480, 3))
        assert count_params(model) == expected
        del model
        keras.backend.clear_session()


def test_unet_trainable_parameters():
    model = kerasseg.build_model("unet", num_classes=2, input_shape=(572, 572, 3))
    assert count_params(model) == 31_031_810
    assert not [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    del model
    keras.backend.clear_session()
    padded = kerasseg.build_model("unet_padded", num_classes=2, input_shape=(512, 512, 3))
    assert count_params(padded) == 31_037_698
    # Bias-free 3x3 convs + BN add one parameter per output channel of the 18 3x3 convolutions.
    assert 31_037_698 - 31_031_810 == 2 * (64 + 128 + 256 + 512 + 1024) + 2 * (512 + 256 + 128 + 64)


def test_trainable_upsampling_counts_the_bilinear_kernels():
    kwargs = dict(SMALL["fcn8s"])
    fixed = kerasseg.build_model("fcn8s", **kwargs)
    learned = kerasseg.build_model("fcn8s", trainable_upsampling=True, **kwargs)
    c = kwargs["num_classes"]
    assert count_params(learned) - count_params(fixed) == (4 * 4 * 2 + 16 * 16) * c * c


# --- shapes and validation ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SMALL))
def test_output_shapes(name):
    kwargs = SMALL[name]
    model = kerasseg.build_model(name, **kwargs)
    h, w, _ = kwargs["input_shape"]
    expected_hw = (h - 184, w - 184) if name == "unet" else (h, w)
    out = model.predict(_images(kwargs["input_shape"], batch=2), verbose=0)
    assert out.shape == (2,) + expected_hw + (kwargs["num_classes"],)
    assert np.all(np.isfinite(out))


def test_unet_valid_sizes():
    assert unet_valid_output_size(572) == 388
    assert unet_valid_output_size(188) == 4
    assert [s for s in range(100, 240) if unet_valid_output_size(s)] == [188, 204, 220, 236]
    assert unet_valid_output_size(172) is None  # integer everywhere but an empty map on the way up


@pytest.mark.parametrize("name, shape, message", [
    ("fcn8s", (48, 64, 3), r"Expected height and width in input_shape to be multiples of 32. "
                           r"Received: input_shape=\(48, 64, 3\)"),
    ("segnet", (64, 80, 3), r"multiples of 32. Received: input_shape=\(64, 80, 3\)"),
    ("unet_padded", (64, 72, 3), r"multiples of 16. Received: input_shape=\(64, 72, 3\)"),
    ("unet", (570, 572, 3), r"Expected the height .*nearest valid height: 556 or 572. "
                            r"Received: input_shape=\(570, 572, 3\)"),
    ("unet", (572, 100, 3), r"Expected the width .*nearest valid width: 188. Received: input_shape=\(572, 100, 3\)"),
])
def test_bad_input_shapes(name, shape, message):
    with pytest.raises(ValueError, match=message):
        kerasseg.build_model(name, num_classes=2, input_shape=shape)


@pytest.mark.parametrize("name", ["fcn32s", "fcn16s", "fcn8s", "segnet"])
def test_only_vgg16_backbone(name):
    with pytest.raises(ValueError, match=r"Expected backbone='vgg16'.*Received: backbone='resnet50'"):
        kerasseg.build_model(name, num_classes=2, input_shape=(64, 64, 3), backbone="resnet50")


def test_bad_builder_arguments():
    with pytest.raises(ValueError, match=r"Expected fc_filters .*Received: fc_filters=0"):
        kerasseg.build_model("fcn8s", num_classes=2, input_shape=(64, 64, 3), fc_filters=0)
    with pytest.raises(ValueError, match=r"Expected base_filters .*Received: base_filters=-1"):
        kerasseg.build_model("unet_padded", num_classes=2, input_shape=(64, 64, 3), base_filters=-1)
    with pytest.raises(ValueError, match=r"Expected dropout in \[0, 1\). Received: dropout=1.0"):
        kerasseg.build_model("unet", num_classes=2, input_shape=(188, 188, 3), dropout=1.0)


# --- unpooling ----------------------------------------------------------------------------------------------

def _argmax_unpool(x, updates, pool_size):
    _, argmax = tf.nn.max_pool_with_argmax(x, pool_size, pool_size, "VALID", include_batch_in_index=True)
    flat = tf.scatter_nd(tf.reshape(argmax, (-1, 1)), tf.reshape(updates, (-1,)), (int(np.prod(x.shape)),))
    return tf.reshape(flat, x.shape).numpy()


@pytest.mark.parametrize("pool_size, shape", [(2, (2, 8, 12, 5)), (3, (1, 9, 6, 2))])
def test_unpooling_equals_index_based_unpooling(pool_size, shape):
    rng = np.random.default_rng(pool_size)
    x = rng.normal(size=shape).astype("float32")  # continuous values: no ties
    pooled = tf.nn.max_pool2d(x, pool_size, pool_size, "VALID").numpy()
    updates = rng.normal(size=pooled.shape).astype("float32")
    out = MaxUnpooling2D(pool_size=pool_size)([updates, x, pooled]).numpy()
    np.testing.assert_array_equal(out, _argmax_unpool(x, updates, pool_size))


def test_unpooling_breaks_ties_on_the_first_maximum():
    x = np.array([[5, 5, 1, 2],     # window 1: tie on row 0 -> (0, 0); window 2: unique max 7 at (1, 3)
                  [5, 0, 3, 7],
                  [0, 0, 4, 1],     # window 3: all equal -> (2, 0); window 4: tie between (2, 2) and (3, 3)
                  [0, 0, 2, 4]], "float32")[None, :, :, None]
    pooled = tf.nn.max_pool2d(x, 2, 2, "VALID")
    out = MaxUnpooling2D()([tf.ones_like(pooled) * 9.0, x, pooled]).numpy()[0, :, :, 0]
    expected = np.zeros((4, 4), "float32")
    expected[0, 0] = expected[1, 3] = expected[2, 0] = expected[2, 2] = 9.0
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("pool_size", [2, 3])
def test_integer_unpooling_formulation_matches_the_float_one(pool_size):
    # What int8 exports trace (kerasseg.layers.unpooling.integer_unpooling): no comparison, no SELECT_V2. On a grid
    # of quantisation-like steps with many ties it places the same values as the exact float formulation.
    from kerasseg.layers.unpooling import integer_unpooling

    rng = np.random.default_rng(7)
    x = (rng.integers(0, 4, size=(2, 4 * pool_size, 3 * pool_size, 3)) * 0.25).astype("float32")
    pooled = tf.nn.max_pool2d(x, pool_size, pool_size, "VALID").numpy()
    updates = rng.normal(size=pooled.shape).astype("float32")
    layer = MaxUnpooling2D(pool_size=pool_size)
    exact = layer([updates, x, pooled]).numpy()
    with integer_unpooling():
        integer = layer([updates, x, pooled]).numpy()
    assert np.count_nonzero(exact) == updates.size  # one switch per window, ties included
    np.testing.assert_array_equal(integer, exact)


def test_unpooling_layer_validates_and_serialises():
    with pytest.raises(ValueError, match=r"Expected pool_size to be an integer >= 2. Received: pool_size=1"):
        MaxUnpooling2D(pool_size=1)
    layer = MaxUnpooling2D(pool_size=2, name="unpool")
    with pytest.raises(ValueError, match=r"Expected pre_pool to be pooled's size times pool_size=2"):
        layer([keras.Input((4, 4, 3)), keras.Input((6, 8, 3)), keras.Input((4, 4, 3))])
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(MaxUnpooling2D(3, name="u")))
    assert isinstance(clone, MaxUnpooling2D) and clone.pool_size == 3 and clone.name == "u"


# --- bilinear upsampling ------------------------------------------------------------------------------------

def test_bilinear_kernel_values():
    np.testing.assert_allclose(bilinear_kernel(4)[0], [0.0625, 0.1875, 0.1875, 0.0625])
    np.testing.assert_allclose(bilinear_kernel(3)[1], [0.5, 1.0, 0.5])
    kernel = BilinearUpsamplingInitializer()((4, 4, 2, 2)).numpy()
    assert np.all(kernel[:, :, 0, 1] == 0) and np.array_equal(kernel[:, :, 1, 1], bilinear_kernel(4))
    with pytest.raises(ValueError, match=r"Expected a square transposed-convolution kernel .*Received: shape="):
        BilinearUpsamplingInitializer()((4, 4, 2, 3))


@pytest.mark.parametrize("factor", [2, 8, 32])
def test_fixed_upsampling_is_bilinear_resize_inside_the_border(factor):
    from kerasseg.layers.blocks import upsample_transposed_bilinear

    inputs = keras.Input((3, 5, 2))
    model = keras.Model(inputs, upsample_transposed_bilinear(inputs, factor, name="up"))
    assert not model.trainable_weights
    x = _images((3, 5, 2), seed=factor)
    out = model.predict(x, verbose=0)
    ref = tf.image.resize(x, (3 * factor, 5 * factor), "bilinear").numpy()
    b = factor // 2
    np.testing.assert_allclose(out[:, b:-b, b:-b], ref[:, b:-b, b:-b], atol=1e-5)


# --- serialisation and tf_keras -----------------------------------------------------------------------------

# SegNet's .keras round trip (the unpooling layer under safe_mode) runs in the model matrix of test_models.py.
@pytest.mark.parametrize("name", ["fcn8s"])
def test_keras_roundtrip_keeps_fixed_kernels(name, tmp_path):
    model = kerasseg.build_model(name, **SMALL[name])
    x = _images(SMALL[name]["input_shape"])
    loaded = kerasseg.load_model(kerasseg.save_model(model, tmp_path / f"{name}.keras"), safe_mode=True)
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    assert count_params(loaded) == count_params(model)
    # Rebuilt from its config alone, the model gets the same fixed bilinear kernels.
    rebuilt = keras.Model.from_config(model.get_config())
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2DTranspose):
            twin = rebuilt.get_layer(layer.name)
            assert not twin.trainable
            np.testing.assert_array_equal(twin.get_weights()[0], layer.get_weights()[0])


@pytest.mark.parametrize("name", ["fcn8s", "segnet"])
def test_tf_keras_builds_the_same_model(name):
    import tf_keras

    from kerasseg.models.factory import get_model_info

    builder = get_model_info(name).builder
    model = builder(**SMALL[name])
    twin = builder(**SMALL[name], keras_module=tf_keras)
    assert isinstance(twin, tf_keras.Model)
    assert [l.name for l in twin.layers] == [l.name for l in model.layers]
    assert count_params(twin) == count_params(model)
    twin.set_weights(model.get_weights())
    x = _images(SMALL[name]["input_shape"])
    np.testing.assert_allclose(twin(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)


# --- TFLite -------------------------------------------------------------------------------------------------

def _run_tflite(content, x):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # Without the default XNNPACK delegate, so that the op list is the model's own.
    interpreter = Interpreter(model_content=content,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    ops = {d["op_name"] for d in interpreter._get_ops_details()}
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return ops, interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.mark.parametrize("name, required", [
    ("segnet", {"SPACE_TO_DEPTH", "EQUAL", "DEPTH_TO_SPACE", "MAX_POOL_2D"}),
    ("fcn8s", {"TRANSPOSE_CONV", "ADD", "MAX_POOL_2D"}),
])
def test_fp32_tflite_uses_builtin_ops_only(name, required):
    # Seeded: with some random weights two SegNet window values differ by float rounding only, and TFLite and
    # TensorFlow may then unpool to different cells (see tests/export/test_export_matrix.py).
    keras.utils.set_random_seed(3)
    model = kerasseg.build_model(name, **SMALL[name])
    x = _images(SMALL[name]["input_shape"], seed=3)
    ops, out = _run_tflite(plain_conversion(model), x)
    assert required <= ops, ops
    assert not {op for op in ops if op.startswith("Flex") or op in ("CUSTOM", "VAR_HANDLE", "READ_VARIABLE")}, ops
    ref = model.predict(x, verbose=0)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
