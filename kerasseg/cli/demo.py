"""The main job: synthetic streets → ERFNet trained with ``model.fit`` → int8 TFLite → device runtime.

Steps:
  1. generate the embedded synthetic street-scene dataset in the plain folder layout;
  2. train ERFNet on the CPU (best checkpoint by validation mIoU);
  3. evaluate the Keras model on the validation split;
  4. export a full-integer int8 TFLite model (calibrated on training images), refusing a model that loses more
     than ``--max-miou-drop`` points;
  5. run the int8 file through the device runtime in ``tflite/`` (numpy + LiteRT only) on the validation PNGs,
     score it with the same confusion-matrix code, and write a colour overlay PNG: frames in (uint8 RGB pixels,
     the normalisation is in the graph), labels out, the file describing itself (embedded TFLite metadata);
  6. print one summary table;
  7. when a real street frame is at hand (``--real-frame``, by default the first CamVid validation frame under
     ``../shared/camvid`` if that folder exists), segment it with the shipped ``erfnet_camvid`` int8 model through
     the same runtime and write its overlay; without one this step is skipped.

``make demo`` runs this with its defaults (about 15 minutes on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from kerasseg.cli.common import add_threads, checkout_root, image_size, import_device_runtime, tool_parser


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(__doc__)
    p.add_argument("--output-dir", default="runs/demo")
    p.add_argument("--input-size", type=image_size("--input-size"), default="128x256")
    p.add_argument("--num-train", type=int, default=300)
    p.add_argument("--num-val", type=int, default=60)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-calibration", type=int, default=100)
    p.add_argument("--max-miou-drop", type=float, default=1.0, help="int8 bound, in mIoU points")
    add_threads(p, 2, "threads of the device runtime (default 2)")
    p.add_argument("--real-frame", default=None,
                   help="an RGB street frame for the pretrained erfnet_camvid model (default: the first CamVid val "
                        "frame under ../shared/camvid when present; 'none' skips)")
    return p


def _timed(fn, runs: int) -> float:
    """Median wall time of ``fn()`` in milliseconds after one warm-up call."""
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import numpy as np
    import tensorflow as tf
    from PIL import Image

    import kerasseg
    from kerasseg.data import list_pairs, load_dataset
    from kerasseg.evaluation import ConfusionMatrix
    from kerasseg.export import to_tflite
    from kerasseg.training import TrainConfig, train
    from kerasseg.visualize import save_image

    runtime = import_device_runtime()
    out = args.output_dir
    h, w = args.input_size
    t0 = time.perf_counter()

    print(f"[1/5] synthetic streets + training ERFNet at {h}x{w} for {args.epochs} epochs", flush=True)
    cfg = TrainConfig(model="erfnet", dataset="synthetic", data_dir=os.path.join(out, "data"),
                      output_dir=os.path.join(out, "erfnet"), input_size=(h, w), epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, seed=args.seed, num_train=args.num_train,
                      num_val=args.num_val, warmup_epochs=1.0)
    result = train(cfg)
    model = kerasseg.load_model(result["best_path"])
    meta = model.kerasseg_metadata
    norm = (meta.mean, meta.std)

    print("[2/5] evaluating the Keras model on the validation split", flush=True)
    val = load_dataset("folder", cfg.data_dir, "val", batch_size=1, augment=False, normalization=norm)
    keras_cm = ConfusionMatrix(meta.num_classes, meta.ignore_label)
    infer = tf.function(lambda x: model(x, training=False), jit_compile=False)
    for images, labels in val:
        keras_cm.update(labels.numpy(), infer(images).numpy().argmax(-1))
    sample = next(iter(val))[0]
    keras_ms = _timed(lambda: infer(sample).numpy(), runs=20)

    print("[3/5] exporting full-integer int8 TFLite", flush=True)
    calib = load_dataset("folder", cfg.data_dir, "train", batch_size=1, augment=False, normalization=norm,
                         shuffle=True, seed=args.seed)
    int8_path = os.path.join(out, "erfnet_int8.tflite")
    to_tflite(model, int8_path, mode="int8", representative_data=calib,
              num_calibration_samples=args.num_calibration)

    print("[4/5] running the int8 model through the device runtime (tflite/)", flush=True)
    seg = runtime.Segmenter(int8_path, num_threads=args.threads)
    int8_cm = ConfusionMatrix(meta.num_classes, meta.ignore_label)
    agree = total = 0
    pairs = list_pairs(cfg.data_dir, "val")
    for i, (img_path, mask_path) in enumerate(pairs):
        image = np.asarray(Image.open(img_path).convert("RGB"))
        label = np.asarray(Image.open(mask_path))
        pred = seg.predict(image)
        int8_cm.update(label, pred)
        valid = label != meta.ignore_label
        keras_pred = infer(((image.astype("float32") - norm[0]) / norm[1])[None]).numpy()[0].argmax(-1)
        agree += int((keras_pred[valid] == pred[valid]).sum())
        total += int(valid.sum())
        if i == 0:
            overlay_path = os.path.join(out, "overlay.png")
            save_image(runtime.overlay(image, pred, meta.palette), overlay_path)
    first_image = np.asarray(Image.open(pairs[0][0]).convert("RGB"))
    int8_ms = _timed(lambda: seg.predict(first_image), runs=20)

    keras_miou, int8_miou = keras_cm.miou, int8_cm.miou
    drop = 100 * (keras_miou - int8_miou)
    sizes = {"keras": os.path.getsize(result["best_path"]), "int8": os.path.getsize(int8_path)}
    print("[5/5] summary\n", flush=True)
    rows = [
        ("validation images", f"{len(pairs)} at {h}x{w}"),
        ("training", f"{args.num_train} images, {args.epochs} epochs, {result['seconds'] / 60:.1f} min, "
                     f"best epoch {result['best_epoch']}"),
        ("Keras fp32 val mIoU", f"{keras_miou:.4f}"),
        ("int8 TFLite val mIoU", f"{int8_miou:.4f}  (drop {drop:+.2f} points; bound {args.max_miou_drop:.1f})"),
        ("int8 vs Keras pixel agreement", f"{100 * agree / max(total, 1):.2f} %"),
        ("int8 file contract", (f"{seg.input_dtype.name} RGB pixels in, normalisation in the graph"
                                if seg.input_format == "pixels" else f"normalised {seg.input_dtype.name} input")
                               + f", labels out; {len(seg.class_names or [])} class names read from its "
                               f"{seg.metadata_source} metadata"),
        ("model size .keras / int8 .tflite", f"{sizes['keras'] / 2**20:.2f} MiB (with optimizer state) / "
                                             f"{sizes['int8'] / 2**20:.2f} MiB"),
        ("latency per image Keras fp32", f"{keras_ms:.1f} ms (batch 1, tf.function)"),
        ("latency per image int8 runtime", f"{int8_ms:.1f} ms ({args.threads} threads, incl. pre/post-processing)"),
        ("overlay", overlay_path),
        ("wall time", f"{(time.perf_counter() - t0) / 60:.1f} min"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k.ljust(width)}  {v}")
    per_class = int8_cm.scores()["iou"]
    print("\n  per-class IoU (Keras / int8): " + ", ".join(
        f"{n} {a:.2f}/{b:.2f}" for n, a, b in zip(meta.class_names, keras_cm.scores()["iou"], per_class)))
    _real_frame(args, out)
    if drop > args.max_miou_drop:
        print(f"\nint8 model loses {drop:.2f} mIoU points, more than the bound of {args.max_miou_drop} points",
              file=sys.stderr)
        return 1
    return 0


def _real_frame(args, out: str) -> None:
    """Step 7: the shipped CamVid ERFNet (int8, device runtime) on a real street frame, when one is at hand."""
    import numpy as np
    from PIL import Image

    import kerasseg
    from kerasseg.visualize import save_image

    runtime = import_device_runtime()
    frame = args.real_frame
    if frame is None:
        camvid = os.path.join(checkout_root(), "..", "shared", "camvid", "val")
        names = sorted(f for f in os.listdir(camvid) if f.endswith(".png")) if os.path.isdir(camvid) else []
        frame = os.path.join(camvid, names[0]) if names else None
    if frame is None or frame == "none":
        print("\n  real frame: none at hand (pass --real-frame FILE); skipped the pretrained erfnet_camvid step")
        return
    if not os.path.isfile(frame):
        raise SystemExit(f"--real-frame: Expected an image file. Received: {frame!r} (not found)")
    seg = runtime.Segmenter(kerasseg.pretrained_files("erfnet_camvid")["tflite_int8"], num_threads=args.threads)
    image = np.asarray(Image.open(frame).convert("RGB"))
    labels = seg.predict(image)
    ms = _timed(lambda: seg.predict(image), runs=10)
    path = os.path.join(out, "pretrained_erfnet_camvid_overlay.png")
    save_image(runtime.overlay(image, labels, seg.palette), path)
    shares = np.bincount(labels.ravel(), minlength=seg.num_classes) / labels.size
    top = ", ".join(f"{seg.class_names[c]} {100 * shares[c]:.0f} %" for c in np.argsort(-shares)[:4])
    print(f"\n  real frame {frame}: pretrained erfnet_camvid int8, {ms:.1f} ms per frame "
          f"({image.shape[0]}x{image.shape[1]}); {top}; overlay {path}")


if __name__ == "__main__":
    raise SystemExit(main())
