"""Package a trained model as a kerasseg pretrained asset: ``.keras`` + int8 ``.tflite`` + preprocessing sidecar.

Example (how ``erfnet_camvid`` is made)::

    python tools/train.py --config configs/erfnet_camvid.yaml --data-dir PATH/TO/CamVid
    python tools/train.py --config configs/erfnet_camvid_refine.yaml --data-dir PATH/TO/CamVid
    python tools/qat.py runs/erfnet_camvid_refine/best.keras --dataset camvid --data-dir PATH/TO/CamVid \
        --epochs 2 --lr 5e-5 --output erfnet_camvid_qat_int8.tflite
    python tools/package_pretrained.py runs/erfnet_camvid_refine/best.keras --name erfnet_camvid --dataset camvid \
        --data-dir PATH/TO/CamVid --int8 erfnet_camvid_qat_int8.tflite \
        --history runs/erfnet_camvid/history.csv runs/erfnet_camvid_refine/history.csv

Steps: the model is scored on the validation split (full frames, whole-image mode); an int8 TFLite file is exported
with calibration images from the training split (or ``--int8 FILE``, e.g. a quantisation-aware one, is taken as
it is) and scored the same way; a file that loses more than ``--max-miou-drop`` points is refused. The ``.keras``
file is written without optimizer state and with a ``pretrained`` record in its metadata (validation mIoU and
per-class IoU of both files, training epochs and time from the history); the local dataset path is not recorded.
Everything is written atomically to ``--output-dir`` (the package's ``kerasseg/assets/pretrained`` by default) as
``NAME.keras``, ``NAME_int8.tflite`` and ``NAME_int8.json``, and the sizes are checked against ``--max-mb``.
Exit status: 0 written, 1 refused (bound or size), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys

import kerasseg
from kerasseg.cli.common import (add_data_dir, add_dataset, add_host_upsample, add_model_file, add_num_calibration,
                                 tool_parser)
from kerasseg.saving import WEIGHTS_DTYPES

# The package's own assets folder: where `kerasseg.pretrained` finds the shipped models.
DEFAULT_OUTPUT = os.path.join(os.path.dirname(os.path.abspath(kerasseg.__file__)), "assets", "pretrained")


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(__doc__)
    add_model_file(p, "the trained .keras file (tools/train.py's best.keras)")
    p.add_argument("--name", required=True, help="asset name, e.g. erfnet_camvid")
    add_dataset(p, None, required=True)
    add_data_dir(p, help="dataset root (train: calibration, val: scoring)")
    p.add_argument("--int8", default=None, help="ship this int8 .tflite (with its .json sidecar) instead of "
                                                "exporting one by post-training quantisation")
    add_num_calibration(p)
    add_host_upsample(p, "export the int8 logits without the model's final bilinear resize, which the runtime "
                         "applies on the host (see tools/export_tflite.py)")
    p.add_argument("--keras-weights", choices=WEIGHTS_DTYPES, default="float32",
                   help="storage of the .keras weights: float16 halves the file (the model stays float32, its "
                        "weights rounded to float16 before scoring and export); default float32")
    p.add_argument("--max-miou-drop", type=float, default=1.0, help="int8 bound in mIoU points (default 1.0)")
    p.add_argument("--max-mb", type=float, default=12.0, help="size budget of the three files in MB (default 12)")
    p.add_argument("--history", default=None, nargs="+",
                   help="the run's history.csv, for the training record; several files for a run in stages, in "
                        "order (the epochs add up)")
    p.add_argument("--command", default=None, help="the training command to record (default: from --name)")
    p.add_argument("--output-dir", default=DEFAULT_OUTPUT)
    return p


def _history_record(paths):
    if not paths:
        return {}
    rows, stage_epochs = [], []
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Expected the run's history.csv. Received: --history {path!r} (not found)")
        with open(path, newline="") as f:
            stage = list(csv.DictReader(f))
        rows.extend(stage)
        stage_epochs.append(len(stage))
    if not rows:
        return {}
    scores = [float(r["val_miou"]) if r.get("val_miou") else -1.0 for r in rows]
    best = max(range(len(rows)), key=lambda i: scores[i])
    record = {"epochs": len(rows), "best_epoch": best + 1, "best_val_miou": scores[best]}
    if len(paths) > 1:
        record["stage_epochs"] = stage_epochs
    return record


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.name.replace("_", "").isalnum():
        parser.error(f"Expected --name of letters, digits and underscores. Received: --name {args.name!r}")
    if args.int8 is not None and not (args.int8.endswith(".tflite") and os.path.isfile(args.int8)):
        parser.error(f"Expected --int8 to be an existing .tflite file. Received: --int8 {args.int8!r}")
    if not os.path.isfile(args.model):
        parser.error(f"Expected an existing .keras model. Received: model {args.model!r}")

    import tempfile

    from kerasseg.evaluation.compare import compare_keras_tflite
    from kerasseg.export import to_tflite
    from kerasseg.export.datasets import export_data
    from kerasseg.export.metadata import embed_metadata
    from kerasseg.preprocessing import ModelMetadata
    from kerasseg.saving import atomic_path, save_model

    model = kerasseg.load_model(args.model)
    if args.keras_weights == "float16":
        # Scored and exported as shipped: with the weights the float16 storage gives back.
        model.set_weights([w.astype("float16").astype(w.dtype) if w.dtype == "float32" else w
                           for w in model.get_weights()])
    meta, calibration, val = export_data(model, args.dataset, args.data_dir, calibration=args.int8 is None)
    meta = meta.with_dataset()
    training = dict(meta.extra.get("training") or {})
    training.pop("data_dir", None)  # a path on the training machine means nothing to users
    training.update(_history_record(args.history))
    training["command"] = args.command or (f"python tools/train.py --config configs/{args.name}.yaml "
                                           f"--data-dir PATH/TO/DATASET")
    meta.extra["training"] = training

    with tempfile.TemporaryDirectory(prefix="kerasseg-package-") as work:
        int8_path = os.path.join(work, f"{args.name}_int8.tflite")
        if args.int8 is None:
            to_tflite(model, int8_path, "int8", representative_data=calibration,
                      num_calibration_samples=args.num_calibration, metadata=meta, host_upsample=args.host_upsample)
            quantization = "ptq"
        else:
            sidecar = os.path.splitext(args.int8)[0] + ".json"
            if not os.path.isfile(sidecar):
                parser.error(f"Expected the sidecar {sidecar!r} next to --int8. Received: no such file")
            shutil.copyfile(args.int8, int8_path)
            shutil.copyfile(sidecar, os.path.splitext(int8_path)[0] + ".json")
            quantization = "qat"
        scores = compare_keras_tflite(model, int8_path, val, meta.num_classes, meta.ignore_label)
        names = meta.class_names or [str(c) for c in range(meta.num_classes)]
        record = {"name": args.name, "dataset": args.dataset, "val_images": scores["num_images"],
                  "val_miou": scores["keras_miou"], "int8_val_miou": scores["tflite_miou"],
                  "int8_miou_drop": scores["miou_drop"], "int8_pixel_agreement": scores["pixel_agreement"],
                  "int8_quantization": quantization, "keras_weights": args.keras_weights,
                  "val_iou": {n: v for n, v in zip(names, scores["keras_iou"])},
                  "int8_val_iou": {n: v for n, v in zip(names, scores["tflite_iou"])}}
        meta.extra["pretrained"] = record
        print(f"{args.name}: Keras val mIoU {100 * scores['keras_miou']:.2f}, int8 ({quantization}) "
              f"{100 * scores['tflite_miou']:.2f} (drop {scores['miou_drop']:.2f} points), pixel agreement "
              f"{100 * scores['pixel_agreement']:.2f} % on {scores['num_images']} images")
        if scores["miou_drop"] > args.max_miou_drop:
            print(f"refused: the int8 file loses {scores['miou_drop']:.2f} points, more than "
                  f"--max-miou-drop {args.max_miou_drop}", file=sys.stderr)
            return 1
        keras_path = os.path.join(work, f"{args.name}.keras")
        save_model(model, keras_path, metadata=meta, weights_dtype=args.keras_weights)
        # The sidecar the device runtime reads carries the same record.
        sidecar_path = os.path.splitext(int8_path)[0] + ".json"
        with open(sidecar_path, encoding="utf-8") as f:
            sidecar = json.load(f)
        sidecar.setdefault("extra", {})["pretrained"] = record
        sidecar["extra"]["training"] = training
        with atomic_path(sidecar_path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            json.dump(sidecar, f, indent=2)
        # The file describes itself with the same record (standard TFLite metadata), sidecar or not.
        with open(int8_path, "rb") as f:
            data = embed_metadata(f.read(), ModelMetadata.from_dict(sidecar))
        with open(int8_path, "wb") as f:
            f.write(data)
        files = [keras_path, int8_path, sidecar_path]
        total = sum(os.path.getsize(p) for p in files)
        for p in files:
            print(f"  {os.path.basename(p)}  {os.path.getsize(p) / 1e6:.2f} MB")
        print(f"  total {total / 1e6:.2f} MB (budget {args.max_mb} MB)")
        if total > args.max_mb * 1e6:
            print(f"refused: {total / 1e6:.2f} MB exceeds --max-mb {args.max_mb}", file=sys.stderr)
            return 1
        os.makedirs(args.output_dir, exist_ok=True)
        for p in files:
            with atomic_path(os.path.join(args.output_dir, os.path.basename(p))) as tmp:
                shutil.copyfile(p, tmp)
    print(f"wrote {args.name} to {args.output_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
