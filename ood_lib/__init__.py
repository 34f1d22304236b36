"""ood_lib: OOD detection with diffusion-generated outliers (label-mixup, OAL latent, SD)."""
from .config import PROFILES, get_profile

__all__ = ["PROFILES", "get_profile"]
__version__ = "0.1.0"
