"""SimpleNet (Liu et al., CVPR 2023) on polar_detect datasets; see ``README.md`` here."""
from polar_detect.models.simplenet.model import Discriminator, FeatureDetector, SimpleNetHead, truncated_l1

__all__ = ["Discriminator", "FeatureDetector", "SimpleNetHead", "truncated_l1"]
