"""ltpa: trainable attention CNNs from "Learn to Pay Attention" (Jetley et al., ICLR 2018).

One import reaches what a user needs: the shipped zoo (``load_zoo_model``, ``list_zoo``), image
decoding (``load_image``), the analysis of one image (``analyse``: top classes and every stage's
attention map), the registry (``create_model``, ``list_models``) and the checkpoint format.
The tooling that trains and ships the project's own zoo (ltpa.maintainer) is not part of it.
"""
from ltpa.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from ltpa.device import get_device
from ltpa.images import load_image
from ltpa.inference import analyse
from ltpa.models.outputs import ModelOutput
from ltpa.registry import create_model, get_spec, list_models, model_name
from ltpa.zoo import ZooError, list_zoo, load_zoo_model

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ModelOutput",
    "ZooError",
    "analyse",
    "create_model",
    "get_device",
    "get_spec",
    "list_models",
    "list_zoo",
    "load_checkpoint",
    "load_image",
    "load_zoo_model",
    "model_name",
    "read_checkpoint",
    "save_checkpoint",
]
