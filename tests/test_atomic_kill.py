"""A writer killed with SIGKILL in the middle of an export leaves the previous files whole, never a partial file.

(Kills during training, while ``best.keras`` and the backup are being written, are in tests/training/test_resume.py.)
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tests.paths import ROOT  # noqa: E402

# Exports a tiny model twice to the same path; the second export stalls (announcing it through FLAG) once the new
# model's bytes are in their temporary file and the new sidecar is half written, so that the test kills it there.
SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    sys.path.insert(0, {root!r})
    import keras
    from kerasseg.export import to_tflite
    from kerasseg.preprocessing import ModelMetadata

    out, flag = sys.argv[1:3]
    inputs = keras.Input((8, 12, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(3, 1)(inputs))
    model.kerasseg_metadata = ModelMetadata.for_model(model, "first")
    to_tflite(model, out, verbose=False)
    second = keras.Model(inputs, keras.layers.Conv2D(5, 1)(inputs))  # other class count: a mix would be caught
    second.kerasseg_metadata = ModelMetadata.for_model(second, "second")
    real_open = open

    class Stalling:
        def __init__(self, f):
            self.f = f
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            return self.f.__exit__(*exc)
        def write(self, text):
            self.f.write(text[: len(text) // 2])
            self.f.flush()
            real_open(flag, "w").write("stalled")
            time.sleep(600)

    def stalling_open(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        return Stalling(f) if "w" in mode and str(path).endswith(".json") else f

    import builtins
    builtins.open = stalling_open
    to_tflite(second, out, verbose=False)
""")


@pytest.mark.slow
def test_export_killed_mid_write_leaves_the_previous_files_whole(tmp_path):
    from tflite.runtime import Segmenter

    script, out, flag = tmp_path / "export.py", tmp_path / "out" / "model.tflite", tmp_path / "flag"
    out.parent.mkdir()
    script.write_text(SCRIPT.format(root=ROOT))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.Popen([sys.executable, str(script), str(out), str(flag)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while not flag.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the export never reached its write:\n{proc.communicate()[0][-3000:]}")
        time.sleep(0.1)
    # Both temporary files exist now, one of them half written.
    assert len([f for f in os.listdir(out.parent) if f.startswith(".")]) == 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    visible = sorted(f for f in os.listdir(out.parent) if not f.startswith("."))
    assert visible == ["model.json", "model.tflite"]
    seg = Segmenter(out, num_threads=1)  # the first export, whole and consistent with its sidecar
    assert seg.num_classes == 3 and seg.metadata["model_name"] == "first"
    assert seg.predict(np.zeros((8, 12, 3), np.uint8)).shape == (8, 12)
