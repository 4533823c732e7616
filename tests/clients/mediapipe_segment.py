"""Segments one RGB frame with MediaPipe Tasks' ImageSegmenter, for each given .tflite file, as a user would.

Runs in the MediaPipe environment (``.venv-mediapipe``), not kerasseg's: nothing from kerasseg is imported, the
model file alone must be enough. For every model it writes ``<out>/<model stem>.npy`` (the category mask) and prints
one JSON line ``{"model": ..., "labels": [...], "mask_shape": [...]}`` (the class names MediaPipe read from the
file). Exit status 0, or 1 with MediaPipe's error on stderr.

    python mediapipe_segment.py FRAME.npy OUT_DIR MODEL.tflite [MODEL.tflite ...]
"""

import json
import os
import sys

import numpy as np


def main(argv) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions
    from mediapipe.tasks.python import vision

    frame = np.load(argv[0])
    out_dir = argv[1]
    image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame))
    for path in argv[2:]:
        options = vision.ImageSegmenterOptions(base_options=BaseOptions(model_asset_path=path),
                                               output_category_mask=True, output_confidence_masks=False)
        with vision.ImageSegmenter.create_from_options(options) as segmenter:
            result = segmenter.segment(image)
            mask = np.array(result.category_mask.numpy_view())
            labels = list(segmenter.labels)
        stem = os.path.splitext(os.path.basename(path))[0]
        np.save(os.path.join(out_dir, stem + ".npy"), mask)
        print(json.dumps({"model": path, "labels": labels, "mask_shape": list(mask.shape)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
