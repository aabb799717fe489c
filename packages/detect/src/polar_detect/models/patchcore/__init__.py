"""PatchCore: Sequential PatchCore (constant-memory online coreset, melding, fine-tuning) and
the original PatchCore baseline, sharing one scorer (issues 6, 17).

* ``model.py``: :class:`PatchCoreModel`, the ``nn.Module`` (encoding + extractor + memory
  bank + anomaly map) -- ``forward(images) -> (map, score)``;
* ``trainer.py``: :class:`SequentialPatchCore`, :class:`PatchCore` (fit, finetune, meld,
  calibrate, predict over a dataset);
* ``coreset.py``: the coreset rules; ``encoding.py``: backbone input encodings;
* ``store.py``: :func:`save_model` / :func:`load_model` (safetensors);
* ``export.py``: ONNX export; ``synth.py``: synthetic plates (tests, bench).

CLI: ``python -m polar_detect.models.patchcore train|meld|finetune|predict|average|export``;
benchmark: ``python -m polar_detect.bench.patchcore``.
"""
from polar_detect.models.patchcore.encoding import InputEncoding
from polar_detect.models.patchcore.model import PatchCoreModel
from polar_detect.models.patchcore.store import load_model, save_model
from polar_detect.models.patchcore.trainer import PatchCore, PatchCoreDetector, SequentialPatchCore

__all__ = ["PatchCore", "PatchCoreDetector", "PatchCoreModel", "SequentialPatchCore", "InputEncoding",
           "load_model", "save_model"]
