"""Multi-worker training: two worker processes on 127.0.0.1 (MultiWorkerMirroredStrategy) match a single process.

The two workers each get their own ``TF_CONFIG`` and train together through `kerasseg.training.train` (Keras
``model.fit``); every global batch is split between them. The chief's final weights are compared with a
single-process run on the same global batches, under the conditions of `test_distributed`: plain SGD, no
augmentation, synchronised batch norm and every pixel labelled, so that both compute the same updates up to
float32 summation order.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tests.dataset_fixtures import label_every_pixel
from tests.saved_weights import saved_weights

from tests.paths import ROOT  # noqa: E402

# Largest absolute weight difference allowed between the multi-worker run and the single-process run after the same
# 4 training steps: the gradients are all-reduced across the workers in another order than one process sums them,
# so the weights differ by float32 round-off (measured: 6e-8), amplified a little by the following steps.
TOLERANCE = 1e-5
# Seconds a run may take before its processes are killed (each takes about 10-20 s on 2 CPU cores).
TIMEOUT = 120

SCRIPT = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, {root!r})
    # Nothing of TensorFlow may run before train() creates the MultiWorkerMirroredStrategy.
    import keras
    from kerasseg.registry import register_model
    from tests.model_cases import tiny_net
    from kerasseg.training import TrainConfig, train

    @register_model("tiny_multiworker_net")
    def tiny_multiworker_net(num_classes, input_shape=(32, 32, 3)):
        return tiny_net(num_classes, input_shape, name="tiny_multiworker_net")

    data_dir, out, strategy = sys.argv[1:4]
    cfg = TrainConfig(model="tiny_multiworker_net", dataset="folder", data_dir=data_dir, output_dir=out,
                      input_size=(32, 32), epochs=2, steps_per_epoch=2, batch_size=4, lr=0.05, warmup_epochs=0,
                      optimizer="sgd", momentum=0.0, weight_decay=0.0, seed=5, verbose=0, backup_freq="epoch",
                      strategy=strategy, sync_bn=strategy != "none", augment=False)

    class ListFiles(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):  # after the backup of the epoch
            if epoch == 0:
                files = sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs)
                print("FILES " + json.dumps(files), flush=True)

    result = train(cfg, callbacks=[ListFiles()])
    print("RESULT " + json.dumps([entry["loss"] for entry in result["history"]]), flush=True)
""")


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONHASHSEED="0", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _free_ports(count):
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _run(commands_and_envs):
    """Runs processes together; kills all of them when one fails or they exceed `TIMEOUT`. Returns their stdout."""
    procs = [subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for cmd, env in commands_and_envs]
    deadline = time.monotonic() + TIMEOUT
    outputs = [None] * len(procs)
    try:
        while any(p.poll() is None for p in procs):
            if time.monotonic() > deadline:
                raise AssertionError(f"multi-worker run exceeded {TIMEOUT} s")
            if any(p.returncode not in (None, 0) for p in procs):
                break  # a worker failed: the others would wait for it forever
            time.sleep(0.2)
    except BaseException:
        for p in procs:
            p.kill()
        raise
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for i, p in enumerate(procs):
            outputs[i] = p.communicate()[0]
    for p, text in zip(procs, outputs):
        assert p.returncode == 0, f"exit status {p.returncode}:\n" + text[-6000:]
    return outputs


def _losses(text):
    lines = [line for line in text.splitlines() if line.startswith("RESULT ")]
    assert lines, text[-4000:]
    return json.loads(lines[-1][len("RESULT "):])


def _files(text):
    lines = [line for line in text.splitlines() if line.startswith("FILES ")]
    assert lines, text[-4000:]
    return set(json.loads(lines[-1][len("FILES "):]))




@pytest.mark.slow
def test_two_workers_match_a_single_process(tmp_path):
    from kerasseg.data.synthetic import write_dataset

    data = str(write_dataset(tmp_path / "data", num_train=8, num_val=4, height=32, width=32, seed=0))
    label_every_pixel(data)
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(root=ROOT))

    start = time.perf_counter()
    (single_out,) = _run([([sys.executable, str(script), data, str(tmp_path / "single"), "none"], _env())])
    single_seconds = time.perf_counter() - start

    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    multi = tmp_path / "multi"
    start = time.perf_counter()
    outputs = _run([([sys.executable, str(script), data, str(multi), "multiworker"],
                     _env(TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})))
                    for i in range(2)])
    multi_seconds = time.perf_counter() - start

    # Worker 0 is the chief: it alone writes output_dir; worker 1's folder of its own is gone after the run.
    assert sorted(os.listdir(multi)) == ["best.keras", "config.json", "final.keras", "history.csv"]
    assert json.loads((multi / "config.json").read_text())["strategy"] == "multiworker"
    # While training, each worker backs up to its own folder (BackupAndRestore resumes each from its own backup).
    chief_files, worker_files = (_files(text) for text in outputs)
    assert {"backup/training_metadata.json", "backup/epoch-0001-step-000000.weights.h5", "config.json"} <= chief_files
    assert {"workertemp_1/backup/training_metadata.json", "workertemp_1/backup/epoch-0001-step-000000.weights.h5",
            "workertemp_1/history.csv"} <= worker_files
    chief_losses, worker_losses = (_losses(text) for text in outputs)
    assert chief_losses == worker_losses  # both workers log the same all-reduced values
    a, b = saved_weights(tmp_path / "single" / "final.keras"), saved_weights(multi / "final.keras")
    assert len(a) == len(b) and all(x.shape == y.shape for x, y in zip(a, b))
    diff = max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))
    print(f"multiworker vs single: max |dw| = {diff:.3g}; losses {chief_losses} vs {_losses(single_out)}; "
          f"{multi_seconds:.1f} s (single process {single_seconds:.1f} s)")
    assert diff <= TOLERANCE
    np.testing.assert_allclose(chief_losses, _losses(single_out), rtol=1e-5)


@pytest.mark.parametrize("tf_config, match", [
    (None, "TF_CONFIG environment variable .* Received: TF_CONFIG not set"),
    ("{not json", "Expected TF_CONFIG to be JSON"),
    ('{"task": {"type": "worker", "index": 0}}', "'cluster'"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 1}}', "'task'"),
])
def test_multiworker_without_a_valid_tf_config_is_a_clear_error(monkeypatch, tf_config, match):
    from kerasseg.training.distribute import make_strategy

    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match=match):
        make_strategy("multiworker")


def test_multiworker_is_a_known_strategy_that_needs_tf_config(monkeypatch):
    from kerasseg.training import TrainConfig
    from kerasseg.training.config import STRATEGIES

    assert "multiworker" in STRATEGIES
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG environment variable"):
        TrainConfig(strategy="multiworker").validate()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
                                                "task": {"type": "worker", "index": 1}}))
    assert TrainConfig(strategy="multiworker").validate().strategy == "multiworker"


def test_train_tool_reports_a_missing_tf_config(monkeypatch):
    from kerasseg.cli.train import resolve_config

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(SystemExit, match="train.py: Expected the TF_CONFIG environment variable"):
        resolve_config(["--strategy", "multiworker"])
