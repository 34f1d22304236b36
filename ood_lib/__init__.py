"""ood_lib: OOD detection with diffusion-generated outliers (label-mixup, OAL latent, SD)."""
from .config import PROFILES, get_profile, override

__all__ = ["PROFILES", "get_profile", "override"]
__version__ = "0.1.0"
