"""Distribution strategies for `kerasseg.training.train`: one device, all local devices, or a multi-worker cluster."""

from __future__ import annotations

import functools
import json
import os

__all__ = ["make_strategy", "is_chief", "worker_dir", "read_tf_config", "synchronize_batch_norm"]


def read_tf_config() -> dict:
    """The ``TF_CONFIG`` environment variable of a multi-worker run, checked.

    ``TF_CONFIG`` is a JSON object such as ``{"cluster": {"worker": ["host1:port", "host2:port"]},
    "task": {"type": "worker", "index": 0}}``: the same ``cluster`` on every worker, each with its own ``task``.

    Raises:
        ValueError: ``TF_CONFIG`` missing, not JSON, or without a ``cluster`` of address lists and a ``task`` that
            names one of its entries.
    """
    text = os.environ.get("TF_CONFIG", "")
    example = ('e.g. TF_CONFIG=\'{"cluster": {"worker": ["127.0.0.1:12345", "127.0.0.1:12346"]}, '
               '"task": {"type": "worker", "index": 0}}\'')
    if not text.strip():
        raise ValueError(f"Expected the TF_CONFIG environment variable describing the cluster and this process's "
                         f"task for strategy='multiworker', {example}. Received: TF_CONFIG not set")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"Expected TF_CONFIG to be JSON, {example}. Received: TF_CONFIG={text!r} ({e})") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if (not isinstance(cluster, dict) or not cluster
            or not all(isinstance(v, list) and v and all(isinstance(a, str) for a in v) for v in cluster.values())):
        raise ValueError(f"Expected TF_CONFIG to hold a 'cluster' mapping job names to lists of 'host:port' "
                         f"addresses, {example}. Received: TF_CONFIG={text!r}")
    if (not isinstance(task, dict) or task.get("type") not in cluster or isinstance(task.get("index"), bool)
            or not isinstance(task.get("index"), int) or not 0 <= task["index"] < len(cluster[task["type"]])):
        raise ValueError(f"Expected TF_CONFIG to hold a 'task' with a 'type' from its cluster ({sorted(cluster)}) "
                         f"and an 'index' into that job's addresses, {example}. Received: TF_CONFIG={text!r}")
    return config


@functools.lru_cache(maxsize=None)
def _multi_worker_strategy_class():
    import tensorflow as tf

    class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        """``tf.distribute.MultiWorkerMirroredStrategy`` whose ``reduce`` accepts what Keras 3's ``fit`` passes it.

        Keras 3 (``keras/src/backend/tensorflow/trainer.py``) calls ``strategy.reduce`` twice in ways the
        multi-worker strategy rejects (tensorflow/tensorflow#72388):

        * ``_maybe_symbolic_build`` reduces the first distributed ``(images, labels)`` batch with
          ``reduce("MEAN", batch, axis=None)``; TF's ``Strategy.reduce`` does not support a nest ("TODO: support
          `value` being a nest") and the collective implementation fails converting the tuple to a tensor
          (``MirroredStrategy`` happens to accept it). Here a nest is reduced element by element (Keras only needs
          the shapes; this costs one all-reduce of a batch per ``fit`` / ``evaluate`` call).
        * ``reduce_per_replica`` reduces every logged value with ``reduce("MEAN", value, axis=0)`` under this
          strategy only, but the logs are scalars: "Invalid reduction dimension 0 for input with 0 dimensions".
          Here a rank-0 value is reduced across replicas only (``axis=None``): the mean of the replicas' values,
          which is what Keras computes for every other strategy.

        Everything else is the TF strategy unchanged; nothing of Keras is patched.
        """

        def reduce(self, reduce_op, value, axis):
            if isinstance(value, (tuple, list, dict)):
                return tf.nest.map_structure(lambda v: None if v is None else self.reduce(reduce_op, v, axis), value)
            shape = getattr(value, "shape", None)
            if axis is not None and shape is not None and shape.rank == 0:
                axis = None
            return super().reduce(reduce_op, value, axis)

    return MultiWorkerMirroredStrategy


def make_strategy(name: str):
    """A ``tf.distribute`` strategy by name.

    Args:
        name: ``"none"`` (the default strategy: one device), ``"mirrored"`` (``MirroredStrategy`` over all local
            GPUs, or all logical CPUs when there is no GPU) or ``"multiworker"`` (``MultiWorkerMirroredStrategy``
            over the cluster in the ``TF_CONFIG`` environment variable: start the same program on every worker,
            each with its own ``task``; create it before any other TensorFlow operation of the process).

    Raises:
        ValueError: an unknown name, or ``"multiworker"`` with ``TF_CONFIG`` missing or malformed.
    """
    if name == "multiworker":
        read_tf_config()  # a clear error before TensorFlow reads it
    import tensorflow as tf

    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multiworker":
        return _multi_worker_strategy_class()()
    raise ValueError(f"Expected strategy 'none', 'mirrored' or 'multiworker'. Received: strategy={name!r}")


def is_chief(strategy) -> bool:
    """Whether this process writes the checkpoints (only the chief of a multi-worker cluster does)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                             and "chief" not in resolver.cluster_spec().as_dict())


def worker_dir(strategy, path: str) -> str:
    """Where this process writes what belongs in ``path``: ``path`` itself on the chief, else a folder of its own.

    Non-chief workers of a multi-worker cluster write their own backup (``BackupAndRestore`` restores every worker
    from its own folder), history and logs to ``path/workertemp_<task id>``, as the TensorFlow multi-worker guide
    advises, so that they never overwrite the chief's files; the folder survives an interruption and can be removed
    once the run has finished.
    """
    if is_chief(strategy):
        return path
    return os.path.join(path, f"workertemp_{strategy.cluster_resolver.task_id}")


def synchronize_batch_norm(model):
    """A copy of ``model`` whose ``BatchNormalization`` layers compute statistics over all replicas.

    Under a distribution strategy each replica normally normalises with the statistics of its own share of the
    batch; synchronised batch norm uses the global batch, which matters with small per-replica batches. Weights are
    copied; call inside the strategy scope.
    """
    import keras

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.BatchNormalization):
            config["synchronized"] = True
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    if hasattr(model, "kerasseg_metadata"):
        copy.kerasseg_metadata = model.kerasseg_metadata
    return copy
