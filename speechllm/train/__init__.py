"""Training: config, data (bucketing, augmentation, encoder cache) and the loop."""

from speechllm.train.config import TrainConfig
from speechllm.train.loop import Trainer, train

__all__ = ["TrainConfig", "Trainer", "train"]
