"""Sequential PatchCore (constant-memory online coreset, melding, fine-tuning) and the
original PatchCore baseline, sharing one feature extractor and one scoring path (issue 6).

CLI: ``python -m polar_detect.patchcore train|meld|finetune|predict``; benchmark:
``python -m polar_detect.patchcore.bench``.
"""
from .encoding import InputEncoding
from .model import (PatchCore, SequentialPatchCore, auroc, best_f1_threshold, load_model)

__all__ = ["PatchCore", "SequentialPatchCore", "InputEncoding", "load_model", "auroc",
           "best_f1_threshold"]
