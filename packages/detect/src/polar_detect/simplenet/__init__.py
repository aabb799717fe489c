"""SimpleNet (Liu et al., CVPR 2023) on polar_detect datasets; see ``README.md`` here."""
from .model import Discriminator, FeatureDetector, SimpleNetHead, truncated_l1

__all__ = ["Discriminator", "FeatureDetector", "SimpleNetHead", "truncated_l1"]
