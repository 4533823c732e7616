"""Quantization-aware training and its int8 export: the names of `kerasseg.qat`, under their documented path.

Example::

    from kerasseg.export.qat import fine_tune, qat_to_tflite, quantize_aware
"""

from kerasseg.qat import (annotate, builder_kwargs_of, calibrate_ranges, fine_tune, fold_transposed_batchnorm,
                          int8_scorer, masked_sparse_crossentropy, qat_to_tflite, qat_to_tflite_bytes,
                          quantize_aware, rebuild_tf_keras, restore_input_order)

__all__ = ["quantize_aware", "rebuild_tf_keras", "fold_transposed_batchnorm", "annotate", "qat_to_tflite",
           "qat_to_tflite_bytes", "builder_kwargs_of", "fine_tune", "masked_sparse_crossentropy",
           "calibrate_ranges", "restore_input_order", "int8_scorer"]
