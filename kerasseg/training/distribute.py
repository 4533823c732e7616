"""Distribution strategies for `kerasseg.training.train`: one device or all local devices."""

from __future__ import annotations

__all__ = ["make_strategy", "is_chief", "synchronize_batch_norm"]


def make_strategy(name: str):
    """A ``tf.distribute`` strategy by name.

    Args:
        name: ``"none"`` (the default strategy: one device) or ``"mirrored"`` (``MirroredStrategy`` over all local
            GPUs, or all logical CPUs when there is no GPU).

    Raises:
        ValueError: an unknown name.
    """
    import tensorflow as tf

    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    raise ValueError(f"Expected strategy 'none' or 'mirrored'. Received: strategy={name!r}")


def is_chief(strategy) -> bool:
    """Whether this process writes the checkpoints (only the chief of a multi-worker cluster does)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                             and "chief" not in resolver.cluster_spec().as_dict())


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
