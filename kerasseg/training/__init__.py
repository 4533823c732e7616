"""Training utilities: schedules, callbacks and the end-to-end `train` function."""

from kerasseg.training.callbacks import BestModelCheckpoint
from kerasseg.training.schedules import PolyDecay
from kerasseg.training.trainer import TrainConfig, parse_size, train

__all__ = ["BestModelCheckpoint", "PolyDecay", "TrainConfig", "parse_size", "train"]
