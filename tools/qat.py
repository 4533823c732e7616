#!/usr/bin/env python
"""Quantization-aware fine-tuning of a trained ``.keras`` model, exported as a full-integer int8 TFLite file.

Example::

    python tools/qat.py runs/erfnet/best.keras --dataset synthetic --data-dir runs/synthetic \
        --epochs 2 --lr 1e-4 --output runs/erfnet/erfnet_qat_int8.tflite --compare-ptq

Steps: optionally, the float model's batch-norm statistics are re-estimated (``--recalibrate-bn``); the model is
rebuilt with tf_keras and annotated for tensorflow-model-optimization (`kerasseg.export.quantize_aware`),
fine-tuned on the dataset's training split (keeping the state, before the first epoch or after one, whose int8
file scores best on the validation split; ``--select-epoch``), converted to int8 TFLite with builtin operators only (written atomically with
its metadata sidecar), checked against a target's rules (``--target``, NPU by default) and scored against the float model on the validation split with the confusion-matrix
code every kerasseg export uses. With ``--compare-ptq`` the post-training int8 export of the same float model is
scored too, and paired bootstraps over the validation images (`kerasseg.evaluation.paired_bootstrap`) give intervals
for QAT minus PTQ and QAT minus float. The figures go to stdout and to ``OUTPUT`` with the suffix ``.report.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="trained .keras model (saved by kerasseg, so it records its architecture)")
    p.add_argument("--dataset", default="synthetic", help="dataset format (see kerasseg.data.load_dataset)")
    p.add_argument("--data-dir", required=True, help="dataset root")
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
    p.add_argument("--target", default="npu", choices=["none", "cpu", "gpu", "npu"],
                   help="edge target whose rules the int8 file must pass ('none' skips the check)")
    p.add_argument("--compare-ptq", action="store_true", help="also export and score post-training int8")
    p.add_argument("--select-epoch", default="int8", choices=["int8", "fake-quant", "none"],
                   help="score the model on the validation split before the fine-tune and after every epoch and keep "
                        "the best state, as tools/train.py keeps best.keras: 'int8' scores the converted file "
                        "(default), 'fake-quant' the tf_keras graph (faster), 'none' keeps the last epoch")
    p.add_argument("--recalibrate-bn", type=int, default=0, metavar="BATCHES",
                   help="first re-estimate the float model's batch-norm statistics on this many training batches "
                        "(kerasseg.training.recalibrate_batch_norm), since QAT freezes them; the recalibrated float "
                        "model is the reference of the scores and is saved as OUTPUT with the suffix "
                        "'_recalibrated.keras' (default 0: off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", type=int, default=2, choices=[0, 1, 2])
    return p


def run(args) -> dict:
    """Runs the QAT pipeline for parsed ``args``; returns the report written next to the output."""
    import numpy as np

    from kerasseg import data as ksdata
    from kerasseg.evaluation import paired_bootstrap
    from kerasseg.evaluation.compare import compare_keras_tflite
    from kerasseg.export import qat
    from kerasseg.export.compat import check
    from kerasseg.export.datasets import export_data
    from kerasseg.export.tflite import to_tflite
    from kerasseg.saving import atomic_path, load_model

    if not args.output.endswith(".tflite"):
        raise SystemExit(f"--output: expected a path ending in '.tflite'. Received: {args.output!r}")
    for arg in ("epochs", "batch_size", "calibration_samples"):
        if getattr(args, arg) < 1:
            raise SystemExit(f"--{arg.replace('_', '-')}: expected a positive integer. Received: {getattr(args, arg)}")
    if args.recalibrate_bn < 0:
        raise SystemExit(f"--recalibrate-bn: expected 0 (off) or a positive number of batches. "
                         f"Received: {args.recalibrate_bn}")
    if not os.path.isfile(args.model):
        raise SystemExit(f"model: expected an existing .keras file. Received: {args.model!r}")
    model = load_model(args.model)
    meta, calibration, eval_data = export_data(model, args.dataset, args.data_dir, seed=args.seed)
    height, width = meta.input_shape[:2]
    train = ksdata.load_dataset(args.dataset, args.data_dir, "train", batch_size=args.batch_size,
                                crop_size=(height, width), augment=True, shuffle=True, seed=args.seed,
                                normalization=(list(meta.mean), list(meta.std)),
                                repeat=args.steps_per_epoch is not None)
    calib = [np.asarray(image) for image, _ in calibration.take(args.calibration_samples)]
    from kerasseg.data.class_weights import resolve_class_weights

    weights_spec = args.class_weights
    if weights_spec is None:
        weights_spec = (meta.extra.get("training") or {}).get("class_weights")
    class_weights = resolve_class_weights(weights_spec, args.data_dir, meta.num_classes,
                                          "folder" if args.dataset == "synthetic" else args.dataset)

    recalibration = None
    if args.recalibrate_bn:
        from kerasseg.evaluation import evaluate, keras_predict_fn
        from kerasseg.saving import save_model
        from kerasseg.training import recalibrate_batch_norm

        before = evaluate(keras_predict_fn(model), eval_data, num_classes=meta.num_classes,
                          ignore_label=meta.ignore_label, max_images=args.max_eval_images)
        recalibration = recalibrate_batch_norm(model, train, steps=args.recalibrate_bn)
        recalibration["float_miou_before"] = float(before.miou)
        recalibration["path"] = save_model(model, os.path.splitext(args.output)[0] + "_recalibrated.keras")
        if args.verbose:
            print(f"recalibrated {recalibration['layers']} batch norms on {recalibration['images']} training images "
                  f"(float mIoU before: {100 * before.miou:.2f})")
    qat_model = qat.quantize_aware(model, representative_data=calib, num_calibration_samples=args.calibration_samples)
    scorer = None
    if args.select_epoch == "int8":
        scorer = qat.int8_scorer(eval_data, meta.num_classes, meta.ignore_label, representative_data=calib,
                                 num_calibration_samples=args.calibration_samples, max_images=args.max_eval_images)
    history = qat.fine_tune(qat_model, train, epochs=args.epochs, learning_rate=args.lr,
                            steps_per_epoch=args.steps_per_epoch, ignore_label=meta.ignore_label,
                            class_weights=class_weights, verbose=args.verbose,
                            score=scorer, validation_data=eval_data if args.select_epoch == "fake-quant" else None,
                            num_classes=meta.num_classes, max_validation_images=args.max_eval_images)
    target = None if args.target == "none" else args.target
    qat.qat_to_tflite(qat_model, args.output, metadata=meta, representative_data=calib,
                      num_calibration_samples=args.calibration_samples, target=target)
    report = {"model": args.model, "output": args.output, "epochs": args.epochs, "lr": args.lr,
              "class_weights": weights_spec,
              "loss": [float(v) for v in history.get("loss", [])]}
    if args.select_epoch != "none":
        report.update(select_epoch=args.select_epoch, val_miou_per_epoch=history["val_miou_per_epoch"],
                      best_epoch=history["best_epoch"])
    if recalibration is not None:
        report["recalibration"] = recalibration
    scores = compare_keras_tflite(model, args.output, eval_data, meta.num_classes, meta.ignore_label,
                                  max_images=args.max_eval_images, per_image=args.compare_ptq)
    report.update(float_miou=scores["keras_miou"], qat_miou=scores["tflite_miou"], qat_drop=scores["miou_drop"],
                  num_images=scores["num_images"])
    if target is not None:
        report["check"] = check(args.output, target).summary()
    if args.compare_ptq:
        ptq_path = os.path.splitext(args.output)[0] + "_ptq.tflite"
        to_tflite(model, ptq_path, "int8", representative_data=calib,
                  num_calibration_samples=args.calibration_samples, metadata=meta, verbose=False)
        ptq = compare_keras_tflite(model, ptq_path, eval_data, meta.num_classes, meta.ignore_label,
                                   max_images=args.max_eval_images, per_image=True)
        report.update(ptq_path=ptq_path, ptq_miou=ptq["tflite_miou"], ptq_drop=ptq["miou_drop"])
        # A few tenths of a point between two int8 files can be the luck of the validation scenes: the paired
        # bootstrap over the same images says which.
        if scores["num_images"] > 1:
            report["qat_vs_ptq"] = paired_bootstrap(scores["tflite_confusions"], ptq["tflite_confusions"],
                                                    seed=args.seed)
            report["qat_vs_float"] = paired_bootstrap(scores["tflite_confusions"], scores["keras_confusions"],
                                                      seed=args.seed)
    with atomic_path(os.path.splitext(args.output)[0] + ".report.json", suffix=".json") as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return report


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    report = run(args)
    line = (f"float mIoU {100 * report['float_miou']:.2f}, QAT int8 {100 * report['qat_miou']:.2f} "
            f"(drop {report['qat_drop']:.2f} points)")
    if "ptq_miou" in report:
        line += f", PTQ int8 {100 * report['ptq_miou']:.2f} (drop {report['ptq_drop']:.2f} points)"
    if "qat_vs_ptq" in report:
        b = report["qat_vs_ptq"]
        line += (f"; QAT - PTQ {b['difference']:+.2f} points, {100 * b['confidence']:.0f} % interval "
                 f"[{b['low']:+.2f}, {b['high']:+.2f}] over {b['num_images']} images")
    print(f"{line}; wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
