"""MediaPipe Tasks' ImageSegmenter as a real client of kerasseg's exports: it runs in its own environment
(``.venv-mediapipe``, made by `make test`) through ``tests/clients/mediapipe_segment.py``, so nothing from kerasseg
helps it read the files."""

import json
import os
import subprocess

import numpy as np
import pytest

from tests.paths import ROOT

MEDIAPIPE_PYTHON = os.path.join(ROOT, ".venv-mediapipe", "bin", "python")
needs_mediapipe = pytest.mark.skipif(
    not os.path.exists(MEDIAPIPE_PYTHON),
    reason="the MediaPipe environment .venv-mediapipe is made by `make test`; run that target")


def mediapipe_segment(paths, image: np.ndarray, folder) -> list:
    """``(class names MediaPipe read from the file, its category mask)`` of one RGB frame, for each model file."""
    folder = os.fspath(folder)
    np.save(os.path.join(folder, "frame.npy"), image)
    result = subprocess.run([MEDIAPIPE_PYTHON, os.path.join(ROOT, "tests", "clients", "mediapipe_segment.py"),
                             os.path.join(folder, "frame.npy"), folder] + [os.fspath(p) for p in paths],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == len(paths), result.stdout[-3000:]
    stems = [os.path.splitext(os.path.basename(os.fspath(p)))[0] for p in paths]
    return [(report["labels"], np.load(os.path.join(folder, stem + ".npy")).reshape(image.shape[:2]))
            for report, stem in zip(reports, stems)]
