"""Training utilities: configuration, schedules, callbacks, distribution, transfer learning and `train`."""

from kerasseg.training.batchnorm import recalibrate_batch_norm
from kerasseg.training.callbacks import (BestModelCheckpoint, LearningRateLogger, NaNGuard, SegmentationTensorBoard,
                                         UnfreezeEncoder)
from kerasseg.training.config import TrainConfig, config_from_dict, load_config_file, parse_size
from kerasseg.training.schedules import PolyDecay
from kerasseg.training.trainer import TrainingDivergedError, train
from kerasseg.training.transfer import copy_weights, encoder_layers

__all__ = ["BestModelCheckpoint", "LearningRateLogger", "NaNGuard", "PolyDecay", "SegmentationTensorBoard",
           "TrainConfig", "TrainingDivergedError", "UnfreezeEncoder", "config_from_dict", "copy_weights",
           "encoder_layers", "load_config_file", "parse_size", "recalibrate_batch_norm", "train"]
