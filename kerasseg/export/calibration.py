"""Calibration images for full-integer quantisation, drawn from the user's own data pipeline."""

from __future__ import annotations

import sys

import numpy as np

from kerasseg.errors import CalibrationDataError

__all__ = ["calibration_samples"]


def calibration_samples(data, count: int, shape: tuple[int, int, int], verbose: bool = False, pixels=None):
    """Yields ``[image (1, H, W, C) float32]`` lists for a calibrating converter, ``count`` single images at most.

    Args:
        data: ``representative_data`` as `to_tflite` takes it.
        count: number of single images to draw.
        shape: the model input ``(H, W, C)``; other image sizes are resized bilinearly.
        verbose: print the progress to stderr.
        pixels: ``(mean, std)`` to turn the normalised images of the user's pipeline back into the pixel values a
            pixel-input graph takes; ``None`` yields them normalised.
    """
    import tensorflow as tf

    height, width, channels = shape
    interactive = verbose and sys.stderr.isatty()
    step = max(1, count // 10)
    done = 0
    for index, element in enumerate(data):
        where = f"representative_data element {index}"
        if isinstance(element, (tuple, list)):
            if not element:
                raise CalibrationDataError(f"Expected representative_data to yield images, (images, labels) tuples "
                                           f"or batches. Received: an empty tuple as {where}")
            element = element[0]
        batch = np.asarray(element)
        if not np.issubdtype(batch.dtype, np.floating):
            raise CalibrationDataError(f"Expected representative_data to yield normalised float images (the "
                                       f"model's input, not raw pixels). Received: dtype {batch.dtype} in {where}")
        if batch.ndim == 3:
            batch = batch[None]
        if batch.ndim != 4 or batch.shape[-1] != channels or 0 in batch.shape:
            raise CalibrationDataError(f"Expected representative_data to yield images (H, W, {channels}) or "
                                       f"batches (B, H, W, {channels}) for the model input {shape}. Received: shape "
                                       f"{np.shape(element)} in {where}")
        finite = np.isfinite(batch).reshape(len(batch), -1).all(axis=1)
        if not finite.all():
            raise CalibrationDataError(f"Expected finite calibration images. Received: NaN or infinite values in "
                                       f"{where}" + (f", image {int(np.argmin(finite))} of its batch"
                                                     if len(batch) > 1 else ""))
        batch = batch.astype(np.float32, copy=False)
        if batch.shape[1:3] != (height, width):
            # Bilinear resizing is linear, so resizing normalised images equals normalising resized ones.
            batch = tf.image.resize(batch, (height, width), method="bilinear").numpy()
        if pixels is not None:
            batch = batch * pixels[1] + pixels[0]
        for image in batch:
            done += 1
            if interactive:
                filled = int(24 * done / count)
                print(f"\rcalibrating {done}/{count} [{'#' * filled}{'.' * (24 - filled)}]", end="",
                      file=sys.stderr, flush=True)
            elif verbose and (done % step == 0 or done in (1, count)):
                print(f"calibrating {done}/{count}", file=sys.stderr, flush=True)
            yield [image[None]]
            if done >= count:
                break
        if done >= count:
            break
    if interactive:
        print(file=sys.stderr)
    if verbose and done < count:
        print(f"calibrated on {done} images only: representative_data ran out before "
              f"num_calibration_samples={count}", file=sys.stderr)
