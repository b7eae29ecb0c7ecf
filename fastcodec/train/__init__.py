"""Training: losses, critics, data, the loop (`python -m fastcodec.train`). Uses `fastcodec.nn` only."""
from .config import TrainConfig
from .loop import Trainer, TrainingError, train

__all__ = ["TrainConfig", "Trainer", "TrainingError", "train"]
