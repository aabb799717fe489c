"""Model and checkpoint files of SimpleNet and the feature-level ensemble.

Both use :mod:`polar_detect.store` (one ``.safetensors`` file per model or checkpoint, the
non-tensor state as JSON in its header; nothing is ever unpickled, so a crafted file can at
worst be refused); this module holds their schema and its validation. Layout of a model directory (``--out`` of ``train``)::

    <dir>/model.safetensors        tensors: the detector's stored state (transform buffers,
                                   head, DRÆM encoder / PatchCore memory of the sources; the
                                   ImageNet backbone weights come from the installed packages)
                                   JSON: {"format": MODEL_FORMAT, "detector": {...}, "run": ...,
                                   "config_digest", "dataset_digest", "meta": {...}}
    <dir>/checkpoint.safetensors   after every epoch: "model.<key>" + Adam state
                                   ("optimizer.<param>.<name>") + epoch, history, detector
    <dir>/train_config.json        readable copy of the training config

``detector`` = ``{"kind", "sources": [source config], "transform": {"in_dim", "out_dim",
"balance", "source_channels", ...}, "head": {"dim", "hidden", "noise_std", "margin"},
"blur_sigma"}``; it is validated (types, bounds, channel sums) before any module is built.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from polar_detect import store as _store
from polar_detect.models.draem.train import digest
from polar_detect.store import ModelFileError, StaleStateError

MODEL_FILE = "model.safetensors"
CHECKPOINT_FILE = "checkpoint.safetensors"
MODEL_FORMAT = "polar_detect.simplenet.model/1"
CHECKPOINT_FORMAT = "polar_detect.simplenet.checkpoint/1"
KINDS = ("simplenet", "ensemble")
#: How refusals of an unreadable file name the detector.
LABEL = "simplenet/ensemble"
MAX_SOURCES, MAX_DIM, MAX_HIDDEN = 16, 1 << 14, 1 << 14

__all__ = ["ModelFileError", "StaleStateError", "MODEL_FILE", "CHECKPOINT_FILE", "detector_config",
           "build_detector", "save_model", "load_model", "inspect_run", "digest"]


def read(path, fmt: str):
    """``(tensors, meta)`` of a model or checkpoint file (format ``fmt``)."""
    return _store.read(path, fmt, LABEL)


def read_meta(path, fmt: str) -> dict:
    return _store.read_meta(path, fmt, LABEL)


def detector_config(kind: str, model) -> dict:
    """JSON description of a :class:`~.model.FeatureDetector`."""
    t = model.transform
    return {"kind": kind, "sources": [s.config() for s in model.sources],
            "transform": {"in_dim": t.in_dim, "out_dim": t.out_dim, **{k: v for k, v in t.info.items()
                                                                       if k not in ("in_dim", "out_dim")}},
            "head": model.head.config(), "blur_sigma": model.blur_sigma}


def _int(v, lo, hi) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _num(v, lo=0.0, strict=False) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and (v > lo if strict else v >= lo))


def check_detector(cfg, path) -> dict:
    """Validate a file's ``detector`` entry before anything is built from it."""
    def bad(key, problem):
        return ModelFileError(f"{path}: detector.{key}: {problem}")
    if not isinstance(cfg, dict):
        raise ModelFileError(f"{path}: detector: expected an object, got {type(cfg).__name__}")
    if cfg.get("kind") not in KINDS:
        raise bad("kind", f"expected one of {KINDS}, got {cfg.get('kind')!r}")
    srcs = cfg.get("sources")
    if not isinstance(srcs, list) or not 1 <= len(srcs) <= MAX_SOURCES:
        raise bad("sources", f"expected a list of 1..{MAX_SOURCES} source configs")
    t, h = cfg.get("transform"), cfg.get("head")
    if not isinstance(t, dict) or not _int(t.get("in_dim"), 1, MAX_DIM) or not _int(t.get("out_dim"), 1, t["in_dim"]):
        raise bad("transform", f"expected in_dim in 1..{MAX_DIM} and out_dim in 1..in_dim, got {t!r}"[:300])
    if t.get("balance", "source") not in ("source", "channel"):
        raise bad("transform.balance", f"expected source or channel, got {t.get('balance')!r}")
    if not isinstance(h, dict) or h.get("dim") != t["out_dim"] or not _int(h.get("hidden"), 1, MAX_HIDDEN):
        raise bad("head", f"expected dim = transform.out_dim and hidden in 1..{MAX_HIDDEN}, got {h!r}"[:300])
    for k in ("noise_std", "margin"):
        if not _num(h.get(k), strict=True):
            raise bad(f"head.{k}", f"expected a finite number > 0, got {h.get(k)!r}")
    if not _num(cfg.get("blur_sigma")):
        raise bad("blur_sigma", f"expected a finite number >= 0, got {cfg.get('blur_sigma')!r}")
    return cfg


def build_detector(cfg: dict, path, download: bool = False):
    """A :class:`~.model.FeatureDetector` (untrained tensors) from a validated config."""
    from polar_detect.models.ensemble.sources import SourceError, source_from_config
    from polar_detect.models.ensemble.transform import GlobalTransform
    from polar_detect.models.simplenet.model import FeatureDetector, SimpleNetHead
    check_detector(cfg, path)
    try:
        sources = [source_from_config(s, download) for s in cfg["sources"]]
    except SourceError as e:
        raise ModelFileError(f"{path}: detector.sources: {e}") from None
    chans = [s.out_channels for s in sources]
    t = cfg["transform"]
    if sum(chans) != t["in_dim"]:
        raise ModelFileError(f"{path}: detector.transform.in_dim {t['in_dim']} != the sources' channels "
                             f"{chans} (sum {sum(chans)})")
    transform = GlobalTransform(t["in_dim"], t["out_dim"])
    transform.info = {k: v for k, v in t.items() if k not in ("in_dim", "out_dim")}
    h = cfg["head"]
    head = SimpleNetHead(h["dim"], h["hidden"], float(h["noise_std"]), float(h["margin"]))
    return FeatureDetector(sources, transform, head, float(cfg["blur_sigma"]))


def load_stored(model, tensors: dict[str, torch.Tensor], path) -> None:
    """Load the stored (non-external) state, every key and shape checked."""
    _store.check_state(model.stored_state(), tensors, path, what="detector")
    model.load_state_dict(tensors, strict=False)


def save_model(path, model, kind: str, header: dict, meta: dict) -> Path:
    return _store.write(path, model.stored_state(),
                        {"format": MODEL_FORMAT, "detector": detector_config(kind, model), **header,
                         "meta": meta})


def load_model(directory, device: str = "cpu", download: bool = False):
    """``(detector in eval mode, full file metadata)`` from ``<directory>/model.safetensors``
    (or the file itself). Refused with :class:`ModelFileError`: missing, not safetensors
    (e.g. a pickle), wrong format, bad config, tensors that do not fit or are non-finite."""
    p = Path(directory)
    path = p / MODEL_FILE if p.is_dir() or not p.suffix else p
    if p.is_dir() and not path.exists():
        raise ModelFileError(f"{path}: missing (not a simplenet/ensemble model directory)")
    tensors, meta = read(path, MODEL_FORMAT)
    _store.check_finite(tensors, path)
    model = build_detector(meta.get("detector"), path, download)
    load_stored(model, tensors, path)
    return model.to(device).eval(), meta


# ------------------------------------------------------------------ run identity / resume
def differences(meta: dict, record: dict, data_digest: str) -> list[str]:
    """What differs between the run a file records and the requested one."""
    return _store.run_differences(meta, record, digest(record), data_digest)


def inspect_run(out_dir, record: dict, data_digest: str, restart: bool = False) -> tuple[str, dict | None]:
    """``("done", model meta)``, ``("resume", checkpoint meta)`` or ``("fresh", None)`` for
    the requested run (config ``record`` + training data digest). A model or checkpoint of
    another run raises :class:`StaleStateError` naming the differences, unless ``restart``.
    Only file headers are read."""
    if restart:
        return "fresh", None
    out = Path(out_dir)
    candidates = ((out / MODEL_FILE, MODEL_FORMAT, "done"), (out / CHECKPOINT_FILE, CHECKPOINT_FORMAT, "resume"))
    return _store.inspect_run(candidates, read_meta, lambda meta: differences(meta, record, data_digest))
