"""ltpa: trainable attention CNNs from "Learn to Pay Attention" (Jetley et al., ICLR 2018)."""
from ltpa.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from ltpa.device import get_device
from ltpa.models.outputs import ModelOutput
from ltpa.registry import create_model, get_spec, list_models, model_name

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ModelOutput",
    "create_model",
    "get_device",
    "get_spec",
    "list_models",
    "load_checkpoint",
    "model_name",
    "read_checkpoint",
    "save_checkpoint",
]
