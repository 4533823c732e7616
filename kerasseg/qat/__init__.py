"""Quantization-aware training (QAT) of kerasseg models with tensorflow-model-optimization, and its int8 export.

tensorflow-model-optimization (tfmot) only accepts ``tf_keras`` models, so a trained Keras 3 model is rebuilt with
``tf_keras`` (its twin, `kerasseg.qat.twin`), annotated for tfmot's default 8-bit scheme with starting ranges from
the float model (`kerasseg.qat.annotation`), fine-tuned with ``fit`` (`kerasseg.qat.fine_tuning`) and converted to a
full-integer, builtin-only TFLite file (`kerasseg.qat.convert`). `kerasseg.qat.workflow` runs the whole recipe on a
dataset and compares the result with the float model and with post-training int8 (what ``tools/qat.py`` does).

Only this package imports ``tf_keras`` and tfmot, inside functions: importing it imports neither.

Example::

    from kerasseg.qat import fine_tune, qat_to_tflite, quantize_aware

    qat_model = quantize_aware(model, representative_data=images)   # model: a trained Keras 3 kerasseg model
    fine_tune(qat_model, train_data, epochs=2, learning_rate=1e-4)
    qat_to_tflite(qat_model, "erfnet_qat_int8.tflite", metadata=model.kerasseg_metadata)
"""

from kerasseg.qat.annotation import annotate, calibrate_ranges, quantize_aware
from kerasseg.qat.convert import check_target, qat_to_tflite, qat_to_tflite_bytes
from kerasseg.qat.fine_tuning import fine_tune, int8_scorer, masked_sparse_crossentropy
from kerasseg.qat.twin import (builder_kwargs_of, fold_transposed_batchnorm, inbound_layers, is_tf_keras_model,
                               layer_nodes, rebuild_tf_keras, restore_input_order, source_name)
from kerasseg.qat.workflow import (ComparisonResult, QATResult, QATSettings, RecalibrationResult, compare,
                                   recalibrate, run_qat, write_report)

__all__ = ["quantize_aware", "rebuild_tf_keras", "fold_transposed_batchnorm", "annotate", "qat_to_tflite",
           "qat_to_tflite_bytes", "check_target", "builder_kwargs_of", "fine_tune", "masked_sparse_crossentropy",
           "calibrate_ranges", "restore_input_order", "int8_scorer", "is_tf_keras_model", "layer_nodes",
           "inbound_layers", "source_name", "QATSettings", "QATResult", "RecalibrationResult", "ComparisonResult",
           "recalibrate", "compare", "write_report", "run_qat"]
