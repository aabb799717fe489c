"""Render runs (``make render``) -> dataset with train/val/test splits (``make dataset``).

Input: one or more render output directories ``<render>/samples/<i:06d>/`` (contract
section 1). A sample is anomalous (label 1) iff ``meta["anomalies"]`` is non-empty;
its ``anomaly_mask`` (uint16 instance ids) becomes the instance mask, ``> 0`` the binary
mask, and the table gives each instance's class and kind (defect | impurity).

``impurities="normal"`` (Sequential PatchCore: water stains are normal variation, not
defects): a sample is anomalous iff it has a *defect* instance and the binary mask covers
defect pixels only; impurity instances stay in the instance mask and table (so
``polar_detect.evaluate`` reports the share of flagged impurities as ``mR_DW_impurity``),
and a stain-only sample is a normal sample that may go to the train split.

``from_mosaic=True``: the polarization modalities (intensity, pol*, stokes, dolp, aolp) are
computed from the render's simulated DoFP raw mosaic (``raw_mosaic.png``, scene
``sensor.dofp.enabled: true``) exactly as ``import-polar --mode mosaic`` treats a real
capture (bilinear demosaicing per angle, per colour channel), converted back to radiance
with the sensor's ``radiance_per_dn``; ``normals`` cannot be measured and is refused.

Splits (deterministic from ``seed``; ids sorted before shuffling with
``numpy.random.default_rng(seed)``, so file-system order does not matter):

* train: ``round(train_ratio * N_normal)`` normal samples (Polar-Ano: 0.8);
* val:   ``round(val_fraction * n)`` of the held-out normal and of the anomalous
  samples (at least one of each when there are two or more, so thresholds can be set);
* test:  the remaining held-out normal samples and anomalous samples.

``train_ratio = 1`` with no anomalous samples builds a train-only (normal) dataset; any
other ratio without anomalies is refused (a test split needs anomalies).

Sample ids: the render's sample directory name (``000012``) for one render; with several,
``r<k>_000012`` (k = position of the render on the command line).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from . import encodings as enc
from .encodings import DatasetError
from .writer import DatasetWriter, split_counts

KINDS = ("defect", "impurity")
IMPURITY_MODES = ("anomalous", "normal")


# -- reading renders ----------------------------------------------------------------------
def list_render_samples(render: Path) -> list[Path]:
    sdir = Path(render) / "samples"
    if not sdir.is_dir():
        raise DatasetError(f"{sdir}: not a render output (no samples/ directory); run `make render` first")
    dirs = sorted(p for p in sdir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise DatasetError(f"{sdir}: the render holds no samples")
    return dirs


def read_meta(sample_dir: Path) -> dict:
    path = sample_dir / "meta.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing (incomplete render sample?)") from None
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: unreadable: {exc}") from None


def _file(sample_dir: Path, meta: dict, name: str, default: str | None = None) -> Path:
    entry = meta.get("files", {}).get(name)
    if entry is None and default is None:
        raise DatasetError(f"{sample_dir / 'meta.json'}: the sample has no {name!r} modality")
    path = sample_dir / (entry["path"] if entry else default)
    if not path.is_file():
        raise DatasetError(f"{path}: missing")
    return path


def _read(path: Path) -> np.ndarray:
    from polar_render import io

    try:
        return io.read_float_tiff(path) if path.suffix in (".tif", ".tiff") else io.read_png(path)
    except OSError as exc:
        raise DatasetError(str(exc)) from None


def colour_channels(meta: dict) -> list[str]:
    return list(meta.get("files", {}).get("intensity", {}).get("channels") or ["Y"])


def read_modality(sample_dir: Path, meta: dict, modality: str) -> np.ndarray:
    """One modality of a render sample in the dataset encoding (float32, (H, W, C))."""
    if modality.startswith("pol"):
        path = _file(sample_dir, meta, modality)
        scale = float(meta["files"][modality].get("exposure_scale", meta.get("exposure_scale", 1.0)))
        dn = _read(path)
        return enc.as_hwc((dn.astype(np.float64) / scale).astype(np.float32))
    if modality == "stokes":
        path = _file(sample_dir, meta, "stokes")
        return enc.stokes_linear(enc.as_hwc(_read(path)), 4)
    if modality == "aolp":
        return enc.encode_aolp(_read(_file(sample_dir, meta, "aolp")))
    return enc.as_hwc(_read(_file(sample_dir, meta, modality)))


def read_mosaic_modalities(sample_dir: Path, meta: dict, modalities) -> dict[str, np.ndarray]:
    """Modalities of a render sample computed from its simulated DoFP mosaic (module docstring)."""
    from .polar_capture import CAPTURE_MODALITIES, DEFAULT_LAYOUT, demosaic, polar_modalities

    bad = [m for m in modalities if m not in CAPTURE_MODALITIES]
    if bad:
        raise DatasetError(f"modality {bad[0]!r} cannot be computed from a DoFP mosaic; "
                           f"choose from {', '.join(CAPTURE_MODALITIES)}")
    if "raw_mosaic" not in meta.get("files", {}):
        raise DatasetError(f"{sample_dir / 'meta.json'}: the sample has no raw_mosaic (render the scene with "
                           f"sensor.dofp.enabled: true, or build without --from-mosaic)")
    path = _file(sample_dir, meta, "raw_mosaic")
    sensor = meta["files"]["raw_mosaic"].get("sensor") or {}
    if "radiance_per_dn" not in sensor:
        raise DatasetError(f"{sample_dir / 'meta.json'}: files.raw_mosaic.sensor lacks radiance_per_dn")
    raw = _read(path)
    planes = [raw] if raw.ndim == 2 else [raw[..., c] for c in range(raw.shape[-1])]
    per_channel = [demosaic(p, sensor.get("layout", DEFAULT_LAYOUT)) for p in planes]
    per_dn = float(sensor["radiance_per_dn"])
    pol = {a: np.stack([c[a] for c in per_channel], axis=-1) * np.float32(per_dn) for a in enc.POL_ANGLES}
    return polar_modalities(pol, modalities)


def read_anomalies(sample_dir: Path, meta: dict) -> tuple[np.ndarray | None, list[dict]]:
    """(instance mask uint16 or None, instance table) of a render sample; checks consistency."""
    table = meta.get("anomalies") or []
    entry = meta.get("files", {}).get("anomaly_mask")
    default = sample_dir / "anomaly_mask.png"
    if not table:
        return None, []
    if entry is None and not default.is_file():
        raise DatasetError(f"{sample_dir / 'meta.json'}: lists anomalies but {default} is missing")
    path = _file(sample_dir, meta, "anomaly_mask", "anomaly_mask.png")
    inst = _read(path)
    if inst.ndim != 2:
        raise DatasetError(f"{path}: anomaly mask must be single-channel, got shape {inst.shape}")
    known = {int(a["id"]) for a in table}
    unknown = sorted(set(np.unique(inst).tolist()) - known - {0})
    if unknown:
        raise DatasetError(f"{path}: instance ids {unknown} are not in meta.json's anomalies table")
    out = []
    for a in table:
        if a.get("kind") not in KINDS:
            raise DatasetError(f"{sample_dir / 'meta.json'}: anomaly {a.get('id')} has kind {a.get('kind')!r}, "
                               f"expected one of {KINDS}")
        out.append({k: a[k] for k in ("id", "class", "kind", "area_px", "bbox") if k in a})
    return inst.astype(np.uint16), out


# -- splits -------------------------------------------------------------------------------
def _take(n: int, fraction: float) -> int:
    k = int(round(fraction * n))
    if fraction > 0 and n >= 2:
        k = min(max(k, 1), n - 1)
    return k


def assign_splits(normal: list[str], anomalous: list[str], seed: int, train_ratio: float = 0.8,
                  val_fraction: float = 0.2) -> dict[str, str]:
    """id -> split (see module docstring); deterministic in (ids, seed, ratios)."""
    if not 0 < train_ratio <= 1:
        raise DatasetError(f"train ratio must be in (0, 1], got {train_ratio}")
    if not 0 <= val_fraction < 1:
        raise DatasetError(f"val fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    normal, anomalous = sorted(normal), sorted(anomalous)
    normal = [normal[i] for i in rng.permutation(len(normal))] if normal else []
    anomalous = [anomalous[i] for i in rng.permutation(len(anomalous))] if anomalous else []
    n_train = int(round(train_ratio * len(normal)))
    if n_train == 0:
        raise DatasetError(f"empty train split: {len(normal)} normal samples x train ratio {train_ratio}")
    held = normal[n_train:]
    if not anomalous and held:
        raise DatasetError("no anomalous samples in the input: a test split needs anomalies "
                           "(render with anomalies, or pass --train-ratio 1 for a train-only dataset)")
    out = {i: "train" for i in normal[:n_train]}
    k_n, k_a = _take(len(held), val_fraction), _take(len(anomalous), val_fraction)
    out.update({i: "val" for i in held[:k_n]})
    out.update({i: "test" for i in held[k_n:]})
    out.update({i: "val" for i in anomalous[:k_a]})
    out.update({i: "test" for i in anomalous[k_a:]})
    return out


# -- build --------------------------------------------------------------------------------
def is_anomalous(anomalies: list[dict], impurities: str = "anomalous") -> bool:
    """Label of a sample from its anomaly table (see the module docstring for ``impurities``)."""
    if impurities == "normal":
        return any(a.get("kind") != "impurity" for a in anomalies)
    return bool(anomalies)


def build_from_renders(renders: list[str | Path], out: str | Path, modalities, seed: int = 0,
                       train_ratio: float = 0.8, val_fraction: float = 0.2, name: str | None = None,
                       overwrite: bool = False, progress: bool = True, impurities: str = "anomalous",
                       from_mosaic: bool = False) -> tuple[dict, str]:
    """Build ``out`` from render runs; returns (manifest, one-line summary)."""
    from tqdm import tqdm

    mods = enc.check_modalities(modalities)
    if impurities not in IMPURITY_MODES:
        raise DatasetError(f"impurities must be one of {IMPURITY_MODES}, got {impurities!r}")
    renders = [Path(r) for r in renders]
    if not renders:
        raise DatasetError("no render directory given")
    entries = []  # (id, render index, sample dir, meta, label)
    for k, r in enumerate(renders):
        for d in list_render_samples(r):
            meta = read_meta(d)
            sid = d.name if len(renders) == 1 else f"r{k}_{d.name}"
            entries.append((sid, k, d, meta, int(is_anomalous(meta.get("anomalies") or [], impurities))))
    splits = assign_splits([e[0] for e in entries if not e[4]], [e[0] for e in entries if e[4]],
                           seed, train_ratio, val_fraction)
    colour = colour_channels(entries[0][3])
    classes: dict[str, str] = {}
    s0_values = []
    need_scale = any(m in enc.INTENSITY_LIKE for m in mods)
    out = Path(out)
    with DatasetWriter(out, name or out.name, seed, overwrite) as w:
        for sid, k, d, meta, label in tqdm(entries, desc=f"dataset {out.name}", unit="sample",
                                            disable=not progress, file=sys.stderr):
            if colour_channels(meta) != colour:
                raise DatasetError(f"{d / 'meta.json'}: colour channels {colour_channels(meta)} differ from {colour}")
            scaled = need_scale and splits[sid] == "train"  # its S0 goes into the intensity scale
            wanted = mods + ["intensity"] if scaled and "intensity" not in mods else mods
            if from_mosaic:
                arrays = read_mosaic_modalities(d, meta, wanted)
            else:
                arrays = {m: read_modality(d, meta, m) for m in wanted}
            if scaled:
                s0 = arrays["intensity"] if "intensity" in mods else arrays.pop("intensity")
                s0_values.append(enc.subsample(s0))
            inst, table = read_anomalies(d, meta)
            shape = next(iter(arrays.values())).shape[:2]
            if inst is not None and inst.shape != shape:
                raise DatasetError(f"{_file(d, meta, 'anomaly_mask', 'anomaly_mask.png')}: mask is {inst.shape}, "
                                   f"images are {shape}")
            for a in table:
                if classes.setdefault(a["class"], a["kind"]) != a["kind"]:
                    raise DatasetError(f"{d / 'meta.json'}: class {a['class']!r} is {a['kind']} here but "
                                       f"{classes[a['class']]} elsewhere")
            mask = None if inst is None else inst > 0
            if inst is not None and impurities == "normal":
                mask = np.isin(inst, [a["id"] for a in table if a["kind"] != "impurity"]) if label else None
            w.add(sid, splits[sid], label, str(renders[k].resolve()), arrays,
                  mask=mask, instance_mask=inst, instances=table,
                  classes=[a["class"] for a in table], source_sample=f"samples/{d.name}",
                  render_index=meta.get("index"))
        scale = enc.robust_scale(np.concatenate(s0_values)) if s0_values else 1.0
        src = f"{enc.SCALE_PERCENTILE}th percentile of train-split S0, all channels"
        units = {m: ("radiance" if m in enc.INTENSITY_LIKE else "") for m in mods}
        modal = {m: enc.modality_entry(m, colour, scale, src, units[m]) for m in mods}
        manifest = w.finish(modal, classes, source_kind="render", renders=[str(r.resolve()) for r in renders],
                            split_params={"train_ratio": train_ratio, "val_fraction": val_fraction},
                            labels={"impurities": impurities},
                            images="DoFP raw mosaic, bilinear demosaicing" if from_mosaic else "exact Stokes",
                            colour_channels=colour)
    line = (f"{len(manifest['samples'])} samples ({split_counts(manifest['samples'])}), "
            f"modalities {','.join(mods)}, {len(classes)} classes -> {out}")
    return manifest, line
