"""The one sample reader: a dataset manifest -> samples with their ground truth.

:func:`load_samples` validates ``<data>/manifest.json`` with
:func:`polar_detect.dataset.manifest.read_manifest` (structure, ids, every file path resolved
inside the dataset directory) and wraps each entry in a :class:`Sample`, which reads what the
metrics and the report need: the anomaly mask, the ignore region, the object (part) mask,
instances (instance mask or connected components) and MVTec LOCO regions with their
saturation settings, plus the modality images for the report figures.

Conventions: masks are bool (H, W), nonzero in the PNG = set; every mask must match the
shape of the anomaly map it is compared with.  Errors are
:class:`~polar_detect.dataset.errors.InputError` naming the file (CLIs exit with status 2).
``PolarDataset`` (training and prediction loading) and ``evaluation`` both read manifests here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from polar_detect.dataset.errors import DatasetError, InputError
from polar_detect.dataset.manifest import manifest_path, read_manifest, resolve_file, sample_file_keys
from polar_detect.dataset.sample_images import read_mask_png, read_modality


def _is_size(x) -> bool:
    return isinstance(x, list) and len(x) == 2 and all(isinstance(v, int) and v > 0 for v in x)


def _components(mask: np.ndarray):
    """8-connected components of a bool mask: (label image, count)."""
    from scipy import ndimage
    return ndimage.label(mask, structure=np.ones((3, 3), bool))


class Sample:
    """One manifest entry (``e``) with its files resolved inside the dataset directory."""

    def __init__(self, manifest_file: Path, entry: dict, index: int, classes: dict, defects_config: dict,
                 integrity: dict | None = None):
        self.manifest_path, self.index, self.e = manifest_file, index, entry
        self.root = manifest_file.parent
        self.integrity = integrity or {}
        self.keys = {rel: f"samples[{index}].{key}" for key, rel in sample_file_keys(entry)}
        self._paths: dict[str, Path] = {}
        self.id = str(entry["id"])
        self.split = entry.get("split")
        self.label = int(entry.get("label", 0))
        self.classes, self.defects_config = classes, defects_config
        self.ignore_image = bool(entry.get("ignore_image", False))
        self.size = tuple(entry["size"]) if _is_size(entry.get("size")) else None

    def _path(self, rel) -> Path:
        """The file of a manifest path, resolved inside the dataset on first use
        (``read_manifest`` has already checked that it resolves)."""
        if rel not in self._paths:
            key = self.keys[rel].split(".", 1)[1]
            try:
                self._paths[rel] = resolve_file(self.manifest_path, self.index, key, rel)
            except DatasetError as e:
                raise InputError.verbatim(self.manifest_path, str(e)) from None
        return self._paths[rel]

    def check_files(self, keys=("mask", "instance_mask", "ignore", "object_mask", "regions")) -> None:
        """Existence, header bounds, size (manifest ``size``) and sha256 (when recorded) of the
        files this sample's metrics read (``polar_detect.dataset.integrity``); InputError."""
        rels = [self.e.get(k) for k in keys if k != "regions" and self.e.get(k)]
        if "regions" in keys:
            rels += [r["mask"] for r in self._region_entries()]
        for rel in rels:
            self._check(rel)

    def _check(self, rel) -> None:
        from polar_detect.dataset.integrity import check_file
        sums = self.e.get("sha256") if isinstance(self.e.get("sha256"), dict) else {}
        try:
            check_file(self._path(rel), mpath=self.manifest_path, key=self.keys[rel], sha256=sums.get(rel),
                       size=self.size, finite_known=bool(self.integrity.get("finite")))
        except DatasetError as e:
            raise InputError.verbatim(self._path(rel), str(e)) from None

    def _read(self, rel, what: str, shape) -> np.ndarray:
        """The PNG ``rel`` as stored, required to have ``shape`` (the anomaly map's)."""
        m = read_mask_png(self._path(rel))
        if m.shape != shape:
            raise InputError(self._path(rel), f"{what} shape {m.shape} differs from the anomaly map {shape}")
        return m

    def _binary(self, key, shape):
        rel = self.e.get(key)
        return None if not rel else self._read(rel, key, shape) > 0

    def ignore(self, shape):
        """Ignore region (bool (H, W), neither normal nor anomalous) or None."""
        return self._binary("ignore", shape)

    def object_mask(self, shape):
        """The part (bool (H, W), object_mask > 0 of the source render) or None."""
        return self._binary("object_mask", shape)

    def mask(self, shape):
        """Anomaly mask (bool (H, W)); all False for a normal sample without one; None for an
        anomalous sample without a mask (no pixel ground truth)."""
        if self.e.get("mask") is None:
            return None if self.label else np.zeros(shape, bool)
        return self._binary("mask", shape)

    def _class_of(self, name):
        return self.classes.get(name, "defect")

    def instances(self, shape, mask):
        """(instance id mask, instance list); falls back to the mask's connected components."""
        inst = [dict(i) for i in self.e.get("instances") or []]
        for i in inst:
            i.setdefault("kind", self._class_of(i.get("class")))
        cls = self.e.get("classes") or ["unknown"]
        name = cls[0] if len(cls) == 1 else "unknown"
        kind = self._class_of(cls[0]) if len(cls) == 1 else "defect"
        rel = self.e.get("instance_mask")
        if rel is not None:
            im = self._read(rel, "instance mask", shape)
            if not inst:
                ignored = {int(i["id"]) for i in self.e.get("ignored_instances") or []}
                ids = [int(v) for v in np.unique(im) if v and int(v) not in ignored]
                inst = [{"id": v, "class": name, "kind": kind} for v in ids]
            return im.astype(np.int64), inst
        if mask is None or not mask.any():
            return None, []
        lab, n = _components(mask)
        return lab, [{"id": k, "class": name, "kind": self._class_of(name)} for k in range(1, n + 1)]

    def _region_entries(self):
        regs = [dict(r) for r in self.e.get("regions") or []]
        regs += [dict(i, mask=i["region_mask"]) for i in self.e.get("instances") or [] if i.get("region_mask")]
        return regs

    def has_regions(self) -> bool:
        return bool(self._region_entries())

    def _saturation(self, r: dict) -> tuple[float, bool]:
        """(saturation threshold, relative?) of a region: its own fields, else the manifest's
        ``defects_config`` for its class, else a resolved ``saturation_px``; inf = unsaturated."""
        cfg = self.defects_config.get(r.get("class") or r.get("defect_name"), {})
        t = r.get("saturation_threshold", cfg.get("saturation_threshold"))
        relative = bool(r.get("relative_saturation", cfg.get("relative_saturation", False)))
        if t is None and r.get("saturation_px") is not None:
            t, relative = float(r["saturation_px"]), False
        return (np.inf if t is None else float(t)), relative

    def regions(self, shape, mask):
        """(K, H, W) bool, saturation thresholds, relative flags; without region annotation an
        anomalous sample's connected components, unsaturated."""
        regs = self._region_entries()
        stack, thr, rel = [], [], []
        for r in regs:
            stack.append(self._read(r["mask"], "region mask", shape) > 0)
            t, relative = self._saturation(r)
            thr.append(t)
            rel.append(relative)
        if not regs and mask is not None and mask.any():
            lab, n = _components(mask)
            stack += [lab == k for k in range(1, n + 1)]
            thr += [np.inf] * n
            rel += [False] * n
        arr = np.stack(stack) if stack else np.zeros((0,) + shape, bool)
        return arr, thr, rel

    def modality_images(self):
        """[(modality, float array)] of the files that can be displayed (report figures)."""
        out = []
        for name, rel in (self.e.get("files") or {}).items():
            self._check(rel)
            a = read_modality(self._path(rel))
            if a is not None:
                out.append((name, a))
        return out


def defects_config(manifest: dict) -> dict:
    """{defect name: LOCO settings} of a manifest's ``defects_config`` (a list, or the
    ``{pixel_value: {...}}`` object that ``import-loco`` writes)."""
    dc = manifest.get("defects_config") or []
    if isinstance(dc, dict):
        dc = [dict(v, defect_name=v.get("defect_name", k)) for k, v in dc.items() if isinstance(v, dict)]
    return {d.get("defect_name"): d for d in dc if isinstance(d, dict)}


def load_samples(data) -> tuple[dict, Path, dict[str, Sample]]:
    """(manifest, manifest path, {id: Sample}); the manifest is validated and every file path
    of every sample resolved inside the dataset directory first (absolute paths, ``..``,
    symlinks out and loops refused)."""
    mpath = manifest_path(data)
    try:
        man = read_manifest(mpath)
        dconf, classes = defects_config(man), man.get("classes") or {}
        samples = {str(e["id"]): Sample(mpath, e, i, classes, dconf, man.get("integrity"))
                   for i, e in enumerate(man["samples"])}
    except InputError:
        raise
    except DatasetError as e:
        raise InputError.verbatim(mpath, str(e)) from None
    return man, mpath, samples
