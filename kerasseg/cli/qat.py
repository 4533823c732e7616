"""Quantization-aware fine-tuning of a trained ``.keras`` model, exported as a full-integer int8 TFLite file.

Example::

    python tools/qat.py runs/erfnet/best.keras --dataset synthetic --data-dir runs/synthetic \
        --epochs 2 --lr 1e-4 --output runs/erfnet/erfnet_qat_int8.tflite --compare-ptq

Steps (`kerasseg.qat.workflow`): optionally the float model's batch-norm statistics are re-estimated
(``--recalibrate-bn``); the model is made quantization-aware, fine-tuned on the training split keeping the state
that scores best on the validation split (``--select-epoch``), converted to int8 TFLite with builtin operators only
(with its metadata sidecar; the file takes uint8 camera pixels, ``--input-format normalized`` keeps the older
normalised-input contract), checked against a target's rules (``--target``, NPU by default) and scored against the
float model on the validation split. With ``--compare-ptq`` the post-training int8 export is scored too, with paired
bootstrap intervals for QAT minus PTQ and QAT minus float. The figures go to stdout and to ``OUTPUT`` with the suffix
``.report.json``.
"""

from __future__ import annotations

import argparse

from kerasseg.cli.common import add_data_dir, add_dataset, add_model_file, tool_parser
from kerasseg.qat.workflow import SELECT_EPOCH_CHOICES, TARGET_CHOICES


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(__doc__)
    add_model_file(p, help="trained .keras model (saved by kerasseg, so it records its architecture)")
    add_dataset(p)
    add_data_dir(p)
    p.add_argument("--output", required=True, help="destination .tflite file (a .json sidecar is written beside it)")
    p.add_argument("--epochs", type=int, default=2, help="QAT fine-tuning epochs")
    p.add_argument("--steps-per-epoch", type=int, default=None, help="batches per epoch (whole split by default)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate of the fine-tune")
    p.add_argument("--class-weights", default=None,
                   help="none | median | enet | JSON list, as in training (default: the training run's, when the "
                        "model records it, else none)")
    p.add_argument("--calibration-samples", type=int, default=50,
                   help="training images for tensors without a trained range and for --compare-ptq")
    p.add_argument("--max-eval-images", type=int, default=None, help="score at most this many validation images")
    p.add_argument("--target", default="npu", choices=list(TARGET_CHOICES),
                   help="edge target whose rules the int8 file must pass ('none' skips the check)")
    p.add_argument("--compare-ptq", action="store_true", help="also export and score post-training int8")
    p.add_argument("--select-epoch", default="int8", choices=list(SELECT_EPOCH_CHOICES),
                   help="score the model on the validation split before the fine-tune and after every epoch and keep "
                        "the best state, as tools/train.py keeps best.keras: 'int8' scores the converted file "
                        "(default), 'fake-quant' the tf_keras graph (faster), 'none' keeps the last epoch")
    p.add_argument("--recalibrate-bn", type=int, default=0, metavar="BATCHES",
                   help="first re-estimate the float model's batch-norm statistics on this many training batches "
                        "(kerasseg.training.recalibrate_batch_norm), since QAT freezes them; the recalibrated float "
                        "model is the reference of the scores and is saved as OUTPUT with the suffix "
                        "'_recalibrated.keras' (default 0: off)")
    p.add_argument("--input-format", default="pixels", choices=["pixels", "normalized"],
                   help="'pixels' (default): the file takes uint8 camera frames (scale 1, zero point 0) and "
                        "normalises them in its graph, like tools/export_tflite.py's int8 files; 'normalized': the "
                        "older contract, int8 normalised images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", type=int, default=2, choices=[0, 1, 2])
    return p


def flag_name(field: str) -> str:
    """The command-line spelling of a `kerasseg.qat.QATSettings` field, for error messages."""
    return "model" if field == "model" else "--" + field.replace("_", "-")


def run_settings(args):
    """Runs `kerasseg.qat.run_qat` for parsed ``args``; returns its `kerasseg.qat.QATResult`."""
    from kerasseg.qat import QATSettings, run_qat

    settings = QATSettings(**vars(args))
    try:
        settings.validate(name=flag_name)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    recalibrate_batch_norm = None
    if settings.recalibrate_bn:
        # The workflow sits below training in the layers; the tool hands it the recalibration.
        from kerasseg.training import recalibrate_batch_norm
    return run_qat(settings, recalibrate_batch_norm=recalibrate_batch_norm)


def run(args) -> dict:
    """Runs the QAT pipeline for parsed ``args``; returns the report written next to the output."""
    return run_settings(args).to_dict()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    result = run_settings(args)
    print(f"{result.summary()}; wrote {args.output}")
    return 0
