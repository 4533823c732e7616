"""Segment images, folders of images or video frames with a saved kerasseg model.

Example::

    python tools/predict.py runs/erfnet/best.keras street.png --output-dir runs/pred
    python tools/predict.py runs/erfnet/best.keras frames/ --output-dir runs/pred --mode slide --alpha 0.6
    python tools/predict.py runs/erfnet/best.keras drive.mp4 --output-dir runs/pred

For each input image (or video frame) NAME, writes to the output folder:

- ``NAME_labels.png``: the class index of every pixel (a palette PNG: the stored values are the class indices);
- ``NAME_color.png``: the labels in the model's palette colours;
- ``NAME_overlay.png``: the colours blended onto the image (``--alpha``).

Videos are read frame by frame with imageio or OpenCV when one of them is installed; otherwise extract the frames
first (e.g. ``ffmpeg -i drive.mp4 frames/%06d.png``) and pass the folder. The normalisation and palette come from
the model's metadata.
"""

from __future__ import annotations

import argparse
import os

from kerasseg.cli.common import add_model_file, model_metadata, report_errors, size_option, tool_parser
from kerasseg.evaluation import MODES, DenseCRFMissingError, add_crf_arguments, crf_from_arguments


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp")


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(__doc__)
    add_model_file(p, "a .keras file saved by kerasseg")
    p.add_argument("input", help="an image file, a folder of images (e.g. extracted video frames) or a video file")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--mode", default="whole", choices=[m for m in MODES if m != "multiscale"],
                   help="'whole': resize to the model input and back; 'slide': overlapping tiles of the input size")
    p.add_argument("--stride", default=None, help="sliding-window stride, N or HxW (default 2/3 of the tile)")
    p.add_argument("--flip", action="store_true", help="average with the prediction of the mirrored image")
    p.add_argument("--alpha", type=float, default=0.5, help="weight of the label colours in the overlay, 0..1")
    p.add_argument("--batch-size", type=int, default=1, help="tiles per forward pass")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_crf_arguments(p)
    return p


class VideoReaderMissing(RuntimeError):
    """Raised for a video input when neither imageio nor OpenCV is installed."""


def _video_backend(path: str) -> str:
    """``"imageio"`` or ``"cv2"``, whichever is installed; a clear error naming the alternatives otherwise."""
    import importlib.util

    for module, name in (("imageio", "imageio"), ("cv2", "cv2")):
        if importlib.util.find_spec(module) is not None:
            return name
    raise VideoReaderMissing(
        f"Reading the video {path!r} needs imageio (pip install 'imageio[ffmpeg]') or OpenCV (pip install "
        f"opencv-python-headless), and neither is installed. Alternatively extract the frames first, e.g. "
        f"`ffmpeg -i {path} frames/%06d.png`, and pass the folder of frames as INPUT.")


def _video_frames(path: str, backend: str):
    """Yields the frames of a video as uint8 RGB arrays."""
    if backend == "imageio":
        import imageio.v3 as iio

        for frame in iio.imiter(path):
            yield frame[..., :3] if frame.ndim == 3 else frame
        return
    import cv2

    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise ValueError(f"Expected a readable video file. Received: input={path!r} (OpenCV cannot open it)")
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


def _read_image(path):
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"Expected a readable image file. Received: {path!r} ({e})") from None


def list_inputs(path: str):
    """``(items, total)``: an iterator of ``(name, uint8 RGB image)`` and the number of items (``None`` if unknown).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a folder without images, or a file that is neither an image nor a video.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"Expected an image, a folder of images or a video. Received: input={path!r} "
                                f"(not found)")
    if os.path.isdir(path):
        files = sorted(f for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS)
                       and os.path.isfile(os.path.join(path, f)))
        if not files:
            raise ValueError(f"Expected a folder containing images ({', '.join(IMAGE_EXTENSIONS)}). "
                             f"Received: input={path!r} with none")
        stems = [os.path.splitext(f)[0] for f in files]
        # frame.png and frame.jpg would both write frame_*.png: keep the extension in such names.
        names = [f.replace(".", "_") if stems.count(s) > 1 else s for f, s in zip(files, stems)]
        return ((n, _read_image(os.path.join(path, f))) for n, f in zip(names, files)), len(files)
    stem, ext = os.path.splitext(os.path.basename(path))
    if ext.lower() in VIDEO_EXTENSIONS:
        frames = _video_frames(path, _video_backend(path))
        return ((f"{stem}_{i:06d}", frame) for i, frame in enumerate(frames)), None
    return iter([(stem, _read_image(path))]), 1


def run(args) -> int:
    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"Expected --alpha in [0, 1]. Received: --alpha {args.alpha}")
    stride = size_option(args.stride, "--stride", square=True)
    crf = crf_from_arguments(args)
    items, total = list_inputs(args.input)

    import numpy as np

    import kerasseg
    from kerasseg.evaluation import keras_predict_fn, predict_logits
    from kerasseg.preprocessing import normalize_np
    from kerasseg.visualize import colorize, label_image, overlay, resolve_palette, save_image

    model = kerasseg.load_model(args.model)
    metadata = model_metadata(model, args.model)
    num_classes = int(model.outputs[0].shape[-1])
    palette = resolve_palette(metadata.palette, num_classes)
    predict_fn = keras_predict_fn(model)
    os.makedirs(args.output_dir, exist_ok=True)

    from kerasseg.evaluation.progress import progress_bar

    count = 0
    with progress_bar(total, desc="predicting", enabled=not args.quiet) as bar:
        for name, image in items:
            scores = predict_logits(predict_fn, normalize_np(image, metadata.mean, metadata.std), mode=args.mode,
                                    stride=stride, flip=args.flip, num_classes=num_classes,
                                    batch_size=args.batch_size, probabilities=crf is not None)
            labels = np.argmax(crf(scores, image) if crf else scores, axis=-1).astype(np.int32)
            base = os.path.join(args.output_dir, name)
            save_image(label_image(labels, palette), f"{base}_labels.png")
            save_image(colorize(labels, palette), f"{base}_color.png")
            save_image(overlay(image, labels, palette, alpha=args.alpha, ignore_label=None), f"{base}_overlay.png")
            count += 1
            bar.update(1)
    if count == 0:
        raise ValueError(f"Expected at least one frame. Received: input={args.input!r} with none")
    print(f"wrote {count} prediction{'s' if count != 1 else ''} (NAME_labels.png, NAME_color.png, NAME_overlay.png) "
          f"to {args.output_dir}")
    return 0


def main(argv=None) -> int:
    return report_errors(run, build_parser().parse_args(argv),
                         (FileNotFoundError, ValueError, VideoReaderMissing, DenseCRFMissingError))


if __name__ == "__main__":
    raise SystemExit(main())
