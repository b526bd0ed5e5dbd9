"""cjepa_hf: C-JEPA self-supervised ViT pretraining on the Hugging Face stack.

Importing the package registers the model type "cjepa" with transformers' Auto
classes (AutoConfig, AutoModel, AutoModelForImageClassification, AutoModelForPreTraining).
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForPreTraining,
)

from .configuration_cjepa import PRESET_NAMES, CJEPAConfig
from .modeling_cjepa import (
    CJEPAForImageClassification,
    CJEPAForPreTraining,
    CJEPAModel,
    CJEPAPreTrainedModel,
    CJEPAPreTrainingOutput,
    build_image_processor,
)

__version__ = "0.1.0"

AutoConfig.register(CJEPAConfig.model_type, CJEPAConfig, exist_ok=True)
AutoModel.register(CJEPAConfig, CJEPAModel, exist_ok=True)
AutoModelForImageClassification.register(CJEPAConfig, CJEPAForImageClassification, exist_ok=True)
AutoModelForPreTraining.register(CJEPAConfig, CJEPAForPreTraining, exist_ok=True)

__all__ = [
    "PRESET_NAMES",
    "CJEPAConfig",
    "CJEPAForImageClassification",
    "CJEPAForPreTraining",
    "CJEPAModel",
    "CJEPAPreTrainedModel",
    "CJEPAPreTrainingOutput",
    "build_image_processor",
]
