"""Render runs (``make render``) -> dataset with train/val/test splits (``make dataset``).

Input: one or more render output directories ``<render>/samples/<i:06d>/`` (contract
section 1). A sample is anomalous (label 1) iff ``meta["anomalies"]`` is non-empty;
its ``anomaly_mask`` (uint16 instance ids) becomes the instance mask, ``> 0`` the binary
mask, and the table gives each instance's class and kind (defect | impurity).

``impurities="normal"`` (Sequential PatchCore: water stains are normal variation, not
defects): a sample is anomalous iff it has a *defect* instance and the binary mask covers
defect pixels only; impurity instances stay in the instance mask and table (so
``polar_detect.evaluation.evaluate`` reports the share of flagged impurities as ``mR_DW_impurity``),
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

Render roles (``--render DIR:train`` / ``DIR:eval``; ``selection.py``): a render pinned to
train sends every sample to train (it must hold normal samples only, else the build is
refused before writing, naming offending ids); one pinned to eval sends its normal,
anomalous and ignore-only samples to val (``val_fraction`` of each group) or test; unpinned
renders are pooled and split as above.  The manifest records ``render_roles`` and each
pinned sample's ``"pinned": "train"|"eval"``.  Splits stay deterministic in the seed.

Ignore regions (``min_visible_px``, ``min_contrast``; rules in ``selection.py``): ignored
instances are removed from ``instances``, ``classes`` and ``mask`` and listed in the sample's
``ignored_instances`` (id, class, kind, reason, visible_px, contrast); their pixels form the
sample's ``ignore`` mask (uint8 0/255 ``ignore.png``; key absent or null when empty); they stay
in ``instance_mask``.  A sample whose anomaly instances are all ignored gets label 0 and
``"ignore_image": true`` (left out of image-level metrics, never in train).  Manifest
``ignore_rules`` holds the thresholds and counts.

Part mask: every sample of a render with ``object_mask`` gets ``"object_mask":
"samples/<id>/object_mask.png"`` (uint8 0/255 = object_mask > 0), used for metrics inside the
part and by the ``polar_detect.models.baseline`` detector.

``norm_from``: the modalities' ``scale``/``offset`` are copied from that dataset (manifest
``normalisation_from``: dataset, manifest, manifest_sha256, name, modalities; each modality
entry also names it) instead of computed; needed for an eval-only build (every render
``:eval``) of intensity-like modalities.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from polar_render import io
from polar_render.progress import progress as progress_bar

from polar_detect.dataset import encodings as enc
from polar_detect.dataset.encodings import DatasetError
from polar_detect.dataset.selection import POOLED, IgnoreRules, borrowed_normalisation, list_ids, parse_render, visible_px_of
from polar_detect.dataset.writer import DatasetWriter, split_counts

KINDS = ("defect", "impurity")
IMPURITY_MODES = ("anomalous", "normal")
# instance fields copied from meta.json "anomalies" into the manifest (visibility ones when present)
INSTANCE_KEYS = ("id", "class", "kind", "area_px", "bbox", "visible_px", "contrast", "contrast_measure",
                 "below_min_visible")


# -- reading renders ----------------------------------------------------------------------
def list_render_samples(render: Path) -> list[Path]:
    """Sample directories of a render (sorted); a symlinked one must stay inside the render
    (``polar_render.paths.contained``: escapes refused, loops reported)."""
    sdir = Path(render) / "samples"
    if not sdir.is_dir():
        raise DatasetError(f"{sdir}: not a render output (no samples/ directory); run `make render` first")
    dirs = []
    for p in sorted(sdir.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_symlink():
            _contained(sdir, p.name, sdir, p.name)
        if p.is_dir():
            dirs.append(p)
    if not dirs:
        raise DatasetError(f"{sdir}: the render holds no samples")
    return dirs


def _contained(root: Path, name, source: Path, key: str) -> Path:
    from polar_render.paths import UnsafePathError, contained

    try:
        return contained(root, name, source=source, key=key)
    except UnsafePathError as exc:
        raise DatasetError(str(exc)) from None


def read_meta(sample_dir: Path) -> dict:
    """A render sample's meta.json; ``files`` must map names to ``{"path": relative path, ...}``."""
    path = sample_dir / "meta.json"
    if not path.exists():
        raise DatasetError(f"{path}: missing (incomplete render sample?)")
    meta = io.read_json_object(path, what="a render sample's meta.json object", error=DatasetError)
    files = meta.setdefault("files", {})
    if not isinstance(files, dict):
        raise DatasetError(f"{path}: files: expected an object {{name: {{path: ...}}}}, got {type(files).__name__}")
    for name, entry in files.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise DatasetError(f"{path}: files.{name}: expected an object with a 'path' string, got {entry!r}")
    table = meta.get("anomalies")
    if table is not None and (not isinstance(table, list) or not all(isinstance(a, dict) for a in table)):
        raise DatasetError(f"{path}: anomalies: expected a list of objects")
    for k, a in enumerate(table or []):
        if isinstance(a.get("id"), bool) or not isinstance(a.get("id"), int) or a["id"] <= 0:
            raise DatasetError(f"{path}: anomalies[{k}].id: expected a positive integer, got {a.get('id')!r}")
    return meta


def _file(sample_dir: Path, meta: dict, name: str, default: str | None = None) -> Path:
    """The file ``meta["files"][name]["path"]`` (or ``default``) of a render sample, resolved
    inside the sample directory."""
    entry = meta.get("files", {}).get(name)
    if entry is None and default is None:
        raise DatasetError(f"{sample_dir / 'meta.json'}: the sample has no {name!r} modality")
    rel = entry["path"] if entry else default
    path = _contained(sample_dir, rel, sample_dir / "meta.json", f"files.{name}.path")
    if not path.is_file():
        raise DatasetError(f"{sample_dir / rel}: missing")
    return path


def _read(path: Path) -> np.ndarray:
    """A render image (float TIFF or 16-bit PNG), bounded and finite."""
    from polar_detect.dataset.images import check_bounds, check_finite

    check_bounds(path)
    try:
        arr = io.read_float_tiff(path) if path.suffix in (".tif", ".tiff") else io.read_png(path)
    except OSError as exc:
        raise DatasetError(str(exc)) from None
    check_finite(arr, path)
    return arr


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


def _check_shapes(sample_dir: Path, meta: dict, arrays: dict) -> None:
    """All modalities of a render sample have the first one's size; the odd file is named."""
    first = next(iter(arrays))
    hw = arrays[first].shape[:2]
    for m, a in arrays.items():
        if a.shape[:2] != hw:
            raise DatasetError(f"{_file(sample_dir, meta, m)}: image is {a.shape[0]}x{a.shape[1]} (HxW), "
                               f"the sample's {first} is {hw[0]}x{hw[1]}")


def read_mosaic_modalities(sample_dir: Path, meta: dict, modalities) -> dict[str, np.ndarray]:
    """Modalities of a render sample computed from its simulated DoFP mosaic (module docstring)."""
    from polar_render.physics.dofp import DEFAULT_LAYOUT, demosaic
    from polar_detect.dataset.polar_capture import CAPTURE_MODALITIES, polar_modalities

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
        out.append({k: a[k] for k in INSTANCE_KEYS if k in a})
    return inst.astype(np.uint16), out


# -- splits -------------------------------------------------------------------------------
def _take(n: int, fraction: float) -> int:
    k = int(round(fraction * n))
    if fraction > 0 and n >= 2:
        k = min(max(k, 1), n - 1)
    return k


def assign_splits(normal: list[str], anomalous: list[str], seed: int, train_ratio: float = 0.8,
                  val_fraction: float = 0.2, *, ignore_only=(), pinned_train=(),
                  pinned_eval: tuple = ((), (), ())) -> dict[str, str]:
    """id -> split (see module docstring); deterministic in (ids, seed, ratios).

    ``normal``/``anomalous``/``ignore_only``: ids of pooled renders (ignore-only samples are
    never trained on: ``val_fraction`` of them to val, the rest to test); ``pinned_train``: ids
    that all go to train; ``pinned_eval``: (normal, anomalous, ignore-only) ids of renders
    pinned to evaluation, each group split val/test by ``val_fraction``.  The pooled ids are
    shuffled first, so a build without pinned renders or ignore-only samples splits as before.
    """
    if not 0 < train_ratio <= 1:
        raise DatasetError(f"train ratio must be in (0, 1], got {train_ratio}")
    if not 0 <= val_fraction < 1:
        raise DatasetError(f"val fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)

    def shuffled(ids):
        ids = sorted(ids)
        return [ids[i] for i in rng.permutation(len(ids))] if ids else []

    normal, anomalous = shuffled(normal), shuffled(anomalous)
    ignore_only = shuffled(ignore_only)
    eval_groups = [shuffled(g) for g in pinned_eval]
    n_train = int(round(train_ratio * len(normal)))
    pooled = normal or anomalous or ignore_only
    if n_train == 0 and not pinned_train and (pooled or not any(eval_groups)):
        raise DatasetError(f"empty train split: {len(normal)} normal samples x train ratio {train_ratio}")
    held = normal[n_train:]
    if not anomalous and not eval_groups[1] and (held or eval_groups[0]):
        raise DatasetError("no anomalous samples in the input: a test split needs anomalies "
                           "(render with anomalies, or pass --train-ratio 1 for a train-only dataset)")
    out = {i: "train" for i in normal[:n_train]}
    out.update({i: "train" for i in pinned_train})
    for group in [held, anomalous, ignore_only] + eval_groups:
        k = _take(len(group), val_fraction)
        out.update({i: "val" for i in group[:k]})
        out.update({i: "test" for i in group[k:]})
    return out


# -- build --------------------------------------------------------------------------------
def is_anomalous(anomalies: list[dict], impurities: str = "anomalous") -> bool:
    """Label of a sample from its anomaly table (see the module docstring for ``impurities``)."""
    if impurities == "normal":
        return any(a.get("kind") != "impurity" for a in anomalies)
    return bool(anomalies)


def counts_as_anomaly(inst: dict, impurities: str) -> bool:
    """Whether an instance makes its sample anomalous (impurities are normal variation with
    ``impurities="normal"``)."""
    return impurities != "normal" or inst.get("kind") != "impurity"


def scan_sample(d: Path, meta: dict, rules: IgnoreRules, impurities: str) -> dict:
    """Label, kept and ignored instances of one render sample (reads only meta.json, and the
    anomaly mask when an instance's pixel count is needed and not recorded)."""
    table = meta.get("anomalies") or []
    counts = None

    def counted(i: int) -> int:
        nonlocal counts
        if counts is None:
            inst, _ = read_anomalies(d, meta)
            counts = np.bincount(inst.ravel()) if inst is not None else np.zeros(1, np.int64)
        return int(counts[i]) if i < counts.size else 0

    kept, ignored = [], []
    for a in table:
        if not counts_as_anomaly(a, impurities):
            kept.append(a)
            continue
        px = visible_px_of(a, counted if rules.min_visible_px else None)
        why = rules.reason(a, px if px is not None else 0, d / "meta.json")
        if why is None:
            kept.append(a)
        else:
            ignored.append({"id": int(a["id"]), "class": a.get("class"), "kind": a.get("kind"), "reason": why,
                            "visible_px": px, "contrast": a.get("contrast")})
    label = int(is_anomalous(kept, impurities))
    return {"label": label, "kept_ids": [int(a["id"]) for a in kept], "ignored": ignored,
            "ignore_image": bool(ignored) and not label}


def _pinned_train_check(entries) -> None:
    """A render pinned to train may hold normal samples only (refused before writing)."""
    for path, group in _by_render(entries, "train").items():
        bad = [e["sid"] for e in group if e["label"] or e["ignored"]]
        if bad:
            raise DatasetError(f"--render {path}:train: the train split takes normal samples only, but {len(bad)} "
                               f"of its {len(group)} samples are anomalous or hold (ignored) anomaly instances: "
                               f"{list_ids(bad)}; render it without anomalies or pin it with :eval")


def _by_render(entries, role):
    out: dict = {}
    for e in entries:
        if e["role"] == role:
            out.setdefault(str(e["render"]), []).append(e)
    return out


@dataclass
class _Plan:
    """What every sample of one build shares: modalities, splits, normalisation source."""
    mods: list
    renders: list
    splits: dict
    colour: list
    need_scale: bool
    borrowed: dict | None
    from_mosaic: bool
    impurities: str
    classes: dict = field(default_factory=dict)
    s0_values: list = field(default_factory=list)


def _scan_renders(parsed, rules: IgnoreRules, impurities: str) -> list[dict]:
    """One entry per render sample: id, render index, meta, role and its ignore scan."""
    renders = [p for p, _ in parsed]
    entries = []
    for k, (r, role) in enumerate(parsed):
        for d in list_render_samples(r):
            meta = read_meta(d)
            sid = d.name if len(renders) == 1 else f"r{k}_{d.name}"
            entries.append({"sid": sid, "k": k, "dir": d, "meta": meta, "role": role, "render": r,
                            **scan_sample(d, meta, rules, impurities)})
    rules.check_classes({a.get("class") for e in entries for a in e["meta"].get("anomalies") or []})
    _pinned_train_check(entries)
    return entries


def _split_entries(entries, seed, train_ratio, val_fraction) -> dict:
    """{sample id: split}: pooled samples split by kind, pinned ones kept in their role."""
    def ids(role, kind):
        return [e["sid"] for e in entries if e["role"] == role and kind == (
            "ignore" if e["ignore_image"] else "anomalous" if e["label"] else "normal")]

    return assign_splits(ids(POOLED, "normal"), ids(POOLED, "anomalous"), seed, train_ratio, val_fraction,
                         ignore_only=ids(POOLED, "ignore"),
                         pinned_train=[e["sid"] for e in entries if e["role"] == "train"],
                         pinned_eval=tuple(ids("eval", g) for g in ("normal", "anomalous", "ignore")))


def _sample_arrays(plan: _Plan, e: dict) -> dict:
    """The modality arrays of one sample; a train sample's S0 goes into the intensity scale."""
    d, meta = e["dir"], e["meta"]
    if colour_channels(meta) != plan.colour:
        raise DatasetError(f"{d / 'meta.json'}: colour channels {colour_channels(meta)} differ from {plan.colour}")
    scaled = plan.need_scale and plan.borrowed is None and plan.splits[e["sid"]] == "train"
    wanted = plan.mods + ["intensity"] if scaled and "intensity" not in plan.mods else plan.mods
    if plan.from_mosaic:
        arrays = read_mosaic_modalities(d, meta, wanted)
    else:
        arrays = {m: read_modality(d, meta, m) for m in wanted}
        _check_shapes(d, meta, arrays)
    if scaled:
        s0 = arrays["intensity"] if "intensity" in plan.mods else arrays.pop("intensity")
        plan.s0_values.append(enc.subsample(s0))
    return arrays


def _add_sample(w: DatasetWriter, plan: _Plan, e: dict) -> None:
    """Write one render sample: modalities, masks (anomaly, instance, ignore, object), instances."""
    d, meta, label = e["dir"], e["meta"], e["label"]
    arrays = _sample_arrays(plan, e)
    inst, table = read_anomalies(d, meta)
    shape = next(iter(arrays.values())).shape[:2]
    if inst is not None and inst.shape != shape:
        raise DatasetError(f"{_file(d, meta, 'anomaly_mask', 'anomaly_mask.png')}: mask is {inst.shape}, "
                           f"images are {shape}")
    for a in table:
        if plan.classes.setdefault(a["class"], a["kind"]) != a["kind"]:
            raise DatasetError(f"{d / 'meta.json'}: class {a['class']!r} is {a['kind']} here but "
                               f"{plan.classes[a['class']]} elsewhere")
    kept = [a for a in table if a["id"] in e["kept_ids"]]
    positive = [a["id"] for a in kept if counts_as_anomaly(a, plan.impurities)]
    mask = np.isin(inst, positive) if label else None
    ignore = np.isin(inst, [g["id"] for g in e["ignored"]]) if e["ignored"] else None
    extra = {"pinned": e["role"]} if e["role"] != POOLED else {}
    extra.update(ignored_instances=e["ignored"], ignore_image=e["ignore_image"])
    w.add(e["sid"], plan.splits[e["sid"]], label, str(plan.renders[e["k"]].resolve()), arrays,
          mask=mask, instance_mask=inst, instances=kept,
          classes=[a["class"] for a in kept], source_sample=f"samples/{d.name}",
          render_index=meta.get("index"), ignore=ignore, object_mask=read_object_mask(d, meta), **extra)


def _modality_entries(plan: _Plan, norm_record: dict | None) -> dict:
    """Manifest ``modalities``: the borrowed normalisation, or the train-split S0 scale."""
    mods, colour = plan.mods, plan.colour
    if plan.borrowed is not None:
        modal = {m: enc.modality_entry(m, colour, 1.0, "", "radiance" if m in enc.INTENSITY_LIKE else "")
                 for m in mods}
        for m, v in plan.borrowed.items():
            modal[m].update(v, normalisation_from=norm_record["manifest"])
            modal[m]["normalisation"] = f"{v['normalisation']} [copied from {norm_record['manifest']}]"
        return modal
    scale = enc.robust_scale(np.concatenate(plan.s0_values)) if plan.s0_values else 1.0
    src = f"{enc.SCALE_PERCENTILE}th percentile of train-split S0, all channels"
    return {m: enc.modality_entry(m, colour, scale, src, "radiance" if m in enc.INTENSITY_LIKE else "")
            for m in mods}


def _plan(parsed, entries, mods, seed, train_ratio, val_fraction, norm_from, from_mosaic, impurities):
    """(plan, normalisation record) of a build; refuses a build with no scale source."""
    splits = _split_entries(entries, seed, train_ratio, val_fraction)
    colour = colour_channels(entries[0]["meta"])
    need_scale = any(m in enc.INTENSITY_LIKE for m in mods)
    borrowed, norm_record = borrowed_normalisation(norm_from, mods, colour) if norm_from else (None, None)
    if need_scale and borrowed is None and "train" not in splits.values():
        raise DatasetError("no train sample to compute the intensity scale from (every render is pinned to "
                           "eval): pass --norm-from <training dataset>")
    plan = _Plan(mods, [p for p, _ in parsed], splits, colour, need_scale, borrowed, from_mosaic, impurities)
    return plan, norm_record


def build_from_renders(renders: list, out: str | Path, modalities, seed: int = 0,
                       train_ratio: float = 0.8, val_fraction: float = 0.2, name: str | None = None,
                       overwrite: bool = False, progress: bool = True, impurities: str = "anomalous",
                       from_mosaic: bool = False, min_visible_px: int = 0, min_contrast=None,
                       norm_from: str | Path | None = None) -> tuple[dict, str]:
    """Build ``out`` from render runs; returns (manifest, one-line summary).

    ``renders``: render directories, each ``"DIR"``, ``"DIR:train"``, ``"DIR:eval"`` or a
    ``(dir, role)`` pair (``selection.parse_render``); ``min_visible_px``/``min_contrast``:
    ignore rules; ``norm_from``: dataset whose normalisation to copy (module
    ``selection``).  Every check runs before anything is written."""
    mods = enc.check_modalities(modalities)
    if impurities not in IMPURITY_MODES:
        raise DatasetError(f"impurities must be one of {IMPURITY_MODES}, got {impurities!r}")
    rules = IgnoreRules(min_visible_px, min_contrast)
    parsed = [parse_render(r) for r in renders]
    if not parsed:
        raise DatasetError("no render directory given")
    entries = _scan_renders(parsed, rules, impurities)
    plan, norm_record = _plan(parsed, entries, mods, seed, train_ratio, val_fraction, norm_from, from_mosaic,
                              impurities)
    out = Path(out)
    with DatasetWriter(out, name or out.name, seed, overwrite) as w:
        for e in progress_bar(entries, desc=f"dataset {out.name}", unit="sample", enabled=progress):
            _add_sample(w, plan, e)
        roles = [{"render": str(r.resolve()), "role": role, "id_prefix": f"r{k}_" if len(parsed) > 1 else "",
                  "n_samples": sum(e["k"] == k for e in entries)} for k, (r, role) in enumerate(parsed)]
        n_ignored = sum(len(e["ignored"]) for e in entries)
        ignore_rules = dict(rules.record(), n_ignored_instances=n_ignored,
                            n_ignore_images=sum(e["ignore_image"] for e in entries))
        manifest = w.finish(_modality_entries(plan, norm_record), plan.classes, source_kind="render",
                            renders=[str(r.resolve()) for r in plan.renders],
                            split_params={"train_ratio": train_ratio, "val_fraction": val_fraction},
                            render_roles=roles, labels={"impurities": impurities}, ignore_rules=ignore_rules,
                            images="DoFP raw mosaic, bilinear demosaicing" if from_mosaic else "exact Stokes",
                            colour_channels=plan.colour, allow_empty_train="train" not in plan.splits.values(),
                            **({"normalisation_from": norm_record} if norm_record else {}))
    line = (f"{len(manifest['samples'])} samples ({split_counts(manifest['samples'])}), "
            f"modalities {','.join(mods)}, {len(plan.classes)} classes"
            + (f", {n_ignored} instances ignored" if n_ignored else "") + f" -> {out}")
    return manifest, line


def read_object_mask(d: Path, meta: dict) -> np.ndarray | None:
    """``object_mask > 0`` of a render sample (the part), or None when the render has none."""
    if "object_mask" not in meta.get("files", {}):
        return None
    m = _read(_file(d, meta, "object_mask"))
    return (m if m.ndim == 2 else m[..., 0]) > 0
