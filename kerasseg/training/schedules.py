"""Learning-rate schedules used by the segmentation papers."""

from __future__ import annotations

import keras

__all__ = ["PolyDecay"]


@keras.saving.register_keras_serializable(package="kerasseg")
class PolyDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Keras' ``PolynomialDecay`` ("poly" decay) with an optional linear warm-up.

    ``lr(step) = (initial_lr - end_lr) * (1 - step / decay_steps) ** power + end_lr`` is
    ``keras.optimizers.schedules.PolynomialDecay``; what Keras' schedule lacks is the warm-up: the first
    ``warmup_steps`` steps scale it linearly from ``warmup_start`` to 1. Used by DeepLab (Chen et al.), PSPNet
    (Zhao et al.) and ERFNet with power 0.9.

    Args:
        initial_learning_rate: peak learning rate.
        decay_steps: total number of training steps (the rate reaches ``end_learning_rate`` there).
        power: polynomial power (0.9 in the papers).
        end_learning_rate: floor of the schedule.
        warmup_steps: steps of linear warm-up (0 for none).
        warmup_start: warm-up starts at this fraction of the peak rate.
    """

    def __init__(self, initial_learning_rate: float, decay_steps: int, power: float = 0.9,
                 end_learning_rate: float = 0.0, warmup_steps: int = 0, warmup_start: float = 0.1):
        if decay_steps < 1:
            raise ValueError(f"Expected decay_steps >= 1. Received: decay_steps={decay_steps!r}")
        if not 0 <= warmup_steps < decay_steps:
            raise ValueError(f"Expected 0 <= warmup_steps < decay_steps ({decay_steps}). "
                             f"Received: warmup_steps={warmup_steps!r}")
        self.initial_learning_rate = float(initial_learning_rate)
        self.decay_steps = int(decay_steps)
        self.power = float(power)
        self.end_learning_rate = float(end_learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.warmup_start = float(warmup_start)
        self._decay = keras.optimizers.schedules.PolynomialDecay(
            self.initial_learning_rate, self.decay_steps, end_learning_rate=self.end_learning_rate, power=self.power)

    def __call__(self, step):
        lr = self._decay(step)
        if self.warmup_steps > 0:
            step = keras.ops.cast(step, lr.dtype)
            w = keras.ops.clip(step / float(self.warmup_steps), 0.0, 1.0)
            lr = keras.ops.where(step < self.warmup_steps, lr * (self.warmup_start + (1.0 - self.warmup_start) * w),
                                 lr)
        return lr

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "power": self.power, "end_learning_rate": self.end_learning_rate,
                "warmup_steps": self.warmup_steps, "warmup_start": self.warmup_start}
