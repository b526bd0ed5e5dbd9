"""cjepa_hf: C-JEPA self-supervised ViT pretraining on the Hugging Face stack."""

from .configuration_cjepa import PRESET_NAMES, CJEPAConfig

__version__ = "0.1.0"
__all__ = ["CJEPAConfig", "PRESET_NAMES"]
