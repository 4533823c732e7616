"""TensorFlow's own TFLite conversion of a Keras model, without kerasseg's edge formulations: a file as a user may
bring it (a ReLU fused into TRANSPOSE_CONV, a bilinear resize by 4 left as RESIZE_BILINEAR), for tests that need the
graphs kerasseg's export would rewrite."""

import os

import numpy as np


def plain_conversion(model, path=None, *, int8: bool = False, flex: bool = False):
    """``model`` converted by ``tf.lite.TFLiteConverter``: written to ``path`` (returned), or its bytes.

    Args:
        model: a Keras model with one input (batch 1; other dimensions as the model has them, dynamic ones included).
        path: the ``.tflite`` file to write; ``None`` returns the bytes.
        int8: full integer quantisation (int8 input and output, calibrated on four seeded normal inputs), what an
            Ethos-U NPU needs; else float32.
        flex: allow TensorFlow (Flex) operators beside the builtin ones.
    """
    import tensorflow as tf

    shape = (1, *model.inputs[0].shape[1:])
    serve = tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec(shape, tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], model)
    converter.experimental_lower_to_saved_model = False
    if int8:
        rng = np.random.default_rng(0)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([rng.normal(size=shape).astype(np.float32)] for _ in range(4))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    if flex:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    data = converter.convert()
    if path is None:
        return data
    with open(path, "wb") as f:
        f.write(data)
    return os.fspath(path)
