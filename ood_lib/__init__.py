"""ood_lib: OOD detection with diffusion-generated outliers (label-mixup, OAL latent, SD)."""
from .artifacts import summarise_cells
from .config import PROFILES, override
from .config_files import get_profile

summarise_cells()   # in a notebook: one cache line per cell, the detail in the cache's cache.log

__all__ = ["PROFILES", "get_profile", "override"]
__version__ = "0.1.0"
