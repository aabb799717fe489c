"""Evaluate a model's predictions against a dataset: metrics.json + report.html.

    python -m polar_detect.evaluate --pred DIR --data DIR --out DIR [--val-pred DIR]

Inputs follow packages/detect/README.md: ``<data>/manifest.json`` (section 2) and
``<pred>/predictions.json`` + float32 TIFF maps (section 4).  Samples of the predictions'
split (default ``test``) are evaluated; prediction entries for ``val`` samples (in --pred or
--val-pred) choose the F1-maximising pixel threshold.  Without validation predictions the
threshold is the one stored in predictions.json, else it is chosen on the evaluated split
itself and flagged ``"source": "test (optimistic)"``.

MVTec LOCO regions (read when present, as ``polar_detect.dataset import-loco`` writes them):
each instance of a sample may carry ``"region_mask": "rel/path.png"`` (one PNG per defect
region, nonzero = region) with ``"saturation_threshold"`` and ``"relative_saturation"``
(LOCO ``defects_config.json`` semantics; a resolved ``"saturation_px"`` is used only when the
raw pair is absent).  Also accepted: a sample-level ``"regions": [{"mask", "class",
"saturation_threshold", "relative_saturation"}]`` list, with missing saturation fields looked
up by class in the manifest-level ``"defects_config"``.  With no region anywhere, sPRO is
reported as null.

Ignore regions (datasets built with ``--min-visible-px``/``--min-contrast``): a sample's
``ignore`` mask (0/255 PNG) marks pixels that are neither normal nor anomalous; they are left
out of every pixel metric (AUROC, AP, AUPRO, sPRO, the F1 threshold on val, thresholded F1).
Samples with ``"ignore_image": true`` (every anomaly instance ignored) are left out of the
image-level metrics (``image.n_ignored`` counts them); their other pixels stay normal pixels.

Added for the issue-13 benchmark: ``image.auroc_ci_low``/``auroc_ci_high`` (stratified
percentile bootstrap over images, ``--bootstrap`` resamples, default 1000, ``--bootstrap-seed``
0, 95 %); ``pixel_part`` = pixel AUROC/AP over the part only (sample ``object_mask``, as
``dataset build`` from renders stores it; null with a note without it); and
``instance_detection_rate`` = {class: detected / annotated instances} at the chosen threshold
(an instance is detected when >= 1 predicted-positive pixel, and >= ``--min-coverage`` of its
area, lies inside it; see ``metrics/defect_recall.py``).

The pixel sweeps are exact while the evaluated pixels fit ``--max-exact-pixels``; above that
they use fixed-bin histograms (``--bins``) over the global score range and every affected
number is reported with its error bound.  Bad input exits with status 2 and names the file.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from .metrics import (AUPRO, AUsPRO, BinaryROC, DefectWiseRecall, F1OptimalThreshold,
                      ThresholdedPRF, auroc_bootstrap_ci, binary_auroc, binary_average_precision,
                      binary_pr_curve, binary_roc_curve, threshold_degeneracy)
from .metrics._curve import DEFAULT_BINS, DEFAULT_MAX_EXACT
from .metrics.bootstrap import DEFAULT_RESAMPLES

FORMAT = "polar_detect.metrics/1"
N_EXAMPLES_PER_CLASS = 2
EXAMPLE_SIDE = 256


class InputError(Exception):
    """Bad input; ``path`` names the offending file."""

    def __init__(self, path, msg):
        super().__init__(f"{path}: {msg}")
        self.path = path

    @classmethod
    def verbatim(cls, path, message: str) -> "InputError":
        """An InputError whose message is already complete (it names the file itself)."""
        err = cls(path, "")
        err.args = (message,)
        return err


# ------------------------------------------------------------------ reading
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise InputError(path, "not found")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise InputError(path, f"cannot parse JSON ({e})") from e


def _check_image(path: Path, what: str = "file") -> None:
    """Every image reader starts here: the file exists and its header declares at most
    ``POLAR_MAX_IMAGE_PIXELS`` pixels (``polar_render.limits``; nothing decoded yet)."""
    from polar_render.limits import InputTooLargeError, check_image_file
    if not path.is_file():
        raise InputError(path, f"{what} not found")
    try:
        check_image_file(path)
    except InputTooLargeError as e:
        raise InputError.verbatim(path, str(e)) from None
    except Exception as e:  # noqa: BLE001 - a damaged header is bad input
        raise InputError(path, f"cannot read the image header ({type(e).__name__}: {e})") from e


def _nonfinite_pixels(a: np.ndarray) -> int:
    from .dataset.images import nonfinite_pixels
    return nonfinite_pixels(a)


def _check_pixels(path: Path, n: int) -> None:
    from polar_render.limits import max_image_pixels
    if n > max_image_pixels():
        raise InputError(path, f"image has {n:,} pixels, above the limit of {max_image_pixels():,} "
                               f"(POLAR_MAX_IMAGE_PIXELS)")


def read_png(path: Path) -> np.ndarray:
    import cv2
    _check_image(path)
    a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if a is None:
        raise InputError(path, "cannot read image")
    if a.ndim == 3:
        a = a[..., 0] if a.shape[2] in (1, 2) else cv2.cvtColor(a[..., :3], cv2.COLOR_BGR2GRAY)
    return a


def read_map(path: Path) -> np.ndarray:
    import tifffile
    _check_image(path, "anomaly map")
    try:
        a = tifffile.imread(str(path))
    except Exception as e:  # noqa: BLE001 - any decoder error is bad input
        raise InputError(path, f"cannot read TIFF ({e})") from e
    a = np.squeeze(a)
    if a.ndim != 2:
        raise InputError(path, f"anomaly map must be (H, W), got shape {a.shape}")
    a = a.astype(np.float32, copy=False)
    bad = _nonfinite_pixels(a)
    if bad:
        raise InputError(path, f"anomaly map contains NaN or infinite values ({bad} of {a.size} pixels)")
    return a


def map_pixels(path: Path) -> int:
    import tifffile
    _check_image(path, "anomaly map")
    try:
        with tifffile.TiffFile(str(path)) as tf:
            return int(np.prod(tf.pages[0].shape))
    except Exception as e:  # noqa: BLE001
        raise InputError(path, f"cannot read TIFF ({e})") from e


def read_modality(path: Path):
    """Any image-like modality file -> (H, W) or (H, W, C) float array (for the report
    figures), or None for a format that cannot be displayed. Oversized headers and non-finite
    values are refused (InputError), not skipped."""
    if path.suffix.lower() not in (".npy", ".npz"):
        _check_image(path, "modality image")
    a = _decode_modality(path)
    if a is not None:
        bad = _nonfinite_pixels(a)
        if bad:
            raise InputError(path, f"{bad} of {int(np.prod(a.shape[:2]))} pixels hold NaN or infinite values")
    return a


def _decode_modality(path: Path):
    try:
        suf = path.suffix.lower()
        if suf in (".tif", ".tiff"):
            import tifffile
            a = tifffile.imread(str(path))
        elif suf == ".npy":
            a = np.load(path, mmap_mode="r")   # header only until the size is checked
            if a.ndim >= 2:
                _check_pixels(path, a.shape[0] * a.shape[1])
        elif suf == ".npz":
            z = np.load(path)
            a = z[z.files[0]]
        else:
            import cv2
            a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if a is not None and a.ndim == 3 and a.shape[2] >= 3:
                a = a[..., [2, 1, 0]] if a.shape[2] == 3 else a
        if a is None:
            return None
        a = np.asarray(a, np.float32)
        if a.ndim == 3 and a.shape[0] <= 4 < a.shape[-1]:
            a = np.moveaxis(a, 0, -1)
        return a
    except InputError:
        raise
    except Exception:  # noqa: BLE001 - a modality we cannot display is left out of the figure
        return None


class Sample:
    def __init__(self, root: Path, manifest_path: Path, entry: dict, classes: dict, defects_config: dict,
                 index: int = 0, integrity: dict | None = None):
        self.root = root
        self.manifest_path = manifest_path
        self.index = index
        self.integrity = integrity or {}
        self.e = entry
        self.paths = {rel: _contained(root, rel, manifest_path, f"samples[{index}].{key}")
                      for key, rel in _sample_file_keys(entry)}
        self.keys = {rel: f"samples[{index}].{key}" for key, rel in _sample_file_keys(entry)}
        self.id = str(entry["id"])
        self.split = entry.get("split")
        self.label = int(entry.get("label", 0))
        self.classes = classes
        self.defects_config = defects_config
        self.ignore_image = bool(entry.get("ignore_image", False))

    def _path(self, rel):
        """The resolved file of a manifest path (checked inside the dataset by load_manifest)."""
        return self.paths[rel]

    def check_files(self, keys=("mask", "instance_mask", "ignore", "object_mask", "regions")) -> None:
        """Existence, header bounds, size (manifest ``size``) and sha256 (when recorded) of the
        files this sample's metrics read (``polar_detect.dataset.integrity``); InputError."""
        rels = [self.e.get(k) for k in keys if k != "regions" and self.e.get(k)]
        if "regions" in keys:
            rels += [r["mask"] for r in self._region_entries()]
        for rel in rels:
            self._check(rel)

    def _check(self, rel) -> None:
        from .dataset.encodings import DatasetError
        from .dataset.integrity import check_file
        size = tuple(self.e["size"]) if _is_size(self.e.get("size")) else None
        sums = self.e.get("sha256") if isinstance(self.e.get("sha256"), dict) else {}
        try:
            check_file(self._path(rel), mpath=self.manifest_path, key=self.keys[rel], sha256=sums.get(rel),
                       size=size, finite_known=bool(self.integrity.get("finite")))
        except DatasetError as e:
            raise InputError.verbatim(self._path(rel), str(e)) from None

    def _binary(self, key, shape):
        rel = self.e.get(key)
        if not rel:
            return None
        m = read_png(self._path(rel))
        if m.shape != shape:
            raise InputError(self._path(rel), f"{key} shape {m.shape} differs from the anomaly map {shape}")
        return m > 0

    def ignore(self, shape):
        """Ignore region (bool (H, W), neither normal nor anomalous) or None."""
        return self._binary("ignore", shape)

    def object_mask(self, shape):
        """The part (bool (H, W), object_mask > 0 of the source render) or None."""
        return self._binary("object_mask", shape)

    def mask(self, shape):
        rel = self.e.get("mask")
        if rel is None:
            if self.label:
                return None  # anomalous without a mask: no pixel ground truth
            return np.zeros(shape, bool)
        m = read_png(self._path(rel))
        if m.shape != shape:
            raise InputError(self._path(rel), f"mask shape {m.shape} differs from the anomaly map {shape}")
        return m > 0

    def instances(self, shape, mask):
        """(instance id mask, instance list); falls back to the mask's connected components."""
        rel = self.e.get("instance_mask")
        inst = [dict(i) for i in self.e.get("instances") or []]
        for i in inst:
            i.setdefault("kind", self.classes.get(i.get("class"), "defect"))
        if rel is not None:
            im = read_png(self._path(rel))
            if im.shape != shape:
                raise InputError(self._path(rel), f"instance mask shape {im.shape} differs from the anomaly map {shape}")
            if not inst:
                ignored = {int(i["id"]) for i in self.e.get("ignored_instances") or []}
                ids = [int(v) for v in np.unique(im) if v and int(v) not in ignored]
                cls = (self.e.get("classes") or ["unknown"])
                inst = [{"id": v, "class": cls[0] if len(cls) == 1 else "unknown",
                         "kind": self.classes.get(cls[0], "defect") if len(cls) == 1 else "defect"} for v in ids]
            return im.astype(np.int64), inst
        if mask is None or not mask.any():
            return None, []
        from scipy import ndimage
        lab, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
        cls = self.e.get("classes") or ["unknown"]
        name = cls[0] if len(cls) == 1 else "unknown"
        return lab, [{"id": k, "class": name, "kind": self.classes.get(name, "defect")} for k in range(1, n + 1)]

    def _region_entries(self):
        regs = [dict(r) for r in self.e.get("regions") or []]
        regs += [dict(i, mask=i["region_mask"]) for i in self.e.get("instances") or [] if i.get("region_mask")]
        return regs

    def has_regions(self):
        return bool(self._region_entries())

    def regions(self, shape, mask):
        """(K, H, W) bool, saturation thresholds, relative flags."""
        regs = self._region_entries()
        stack, thr, rel = [], [], []
        for r in regs:
            p = self._path(r["mask"])
            m = read_png(p)
            if m.shape != shape:
                raise InputError(p, f"region mask shape {m.shape} differs from the anomaly map {shape}")
            cfg = self.defects_config.get(r.get("class") or r.get("defect_name"), {})
            t = r.get("saturation_threshold", cfg.get("saturation_threshold"))
            relative = bool(r.get("relative_saturation", cfg.get("relative_saturation", False)))
            if t is None and r.get("saturation_px") is not None:
                t, relative = float(r["saturation_px"]), False
            stack.append(m > 0)
            thr.append(np.inf if t is None else float(t))
            rel.append(relative)
        if not regs and mask is not None and mask.any():
            # anomalous sample without region annotation: its connected components, unsaturated
            from scipy import ndimage
            lab, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
            for k in range(1, n + 1):
                stack.append(lab == k)
                thr.append(np.inf)
                rel.append(False)
        arr = np.stack(stack) if stack else np.zeros((0,) + shape, bool)
        return arr, thr, rel

    def modality_images(self):
        out = []
        for name, rel in (self.e.get("files") or {}).items():
            self._check(rel)
            a = read_modality(self._path(rel))
            if a is not None:
                out.append((name, a))
        return out


def _contained(root: Path, rel, source: Path, key: str) -> Path:
    """A path named in a data file, resolved inside ``root`` (``polar_render.paths``)."""
    from polar_render.paths import UnsafePathError, contained
    if not isinstance(rel, str):
        raise InputError(source, f"{key}: expected a relative path, got {rel!r}")
    try:
        return contained(root, rel, source=source, key=key)
    except UnsafePathError as e:
        raise InputError.verbatim(source, str(e)) from None


def _dict_list(x) -> bool:
    return x is None or (isinstance(x, list) and all(isinstance(v, dict) for v in x))


def _is_size(x) -> bool:
    return isinstance(x, list) and len(x) == 2 and all(isinstance(v, int) and v > 0 for v in x)


def _sample_file_keys(e: dict) -> list[tuple[str, str]]:
    """(key, relative path) of every file a manifest sample names, ``regions[k].mask`` included."""
    from .dataset.manifest import sample_file_keys
    keys = sample_file_keys(e)
    keys += [(f"regions[{k}].mask", r.get("mask")) for k, r in enumerate(e.get("regions") or [])
             if isinstance(r, dict)]
    return keys


def load_manifest(data: Path):
    """(manifest, path, {id: Sample}); every file path of every sample is resolved inside the
    dataset directory first (absolute paths, ``..``, symlinks out and loops refused)."""
    mpath = data / "manifest.json"
    man = _load_json(mpath)
    if not isinstance(man, dict) or not isinstance(man.get("samples"), list):
        raise InputError(mpath, "no 'samples' list")
    dc = man.get("defects_config") or []
    if isinstance(dc, dict):  # import-loco writes {pixel_value: {defect_name, ...}}
        dc = [dict(v, defect_name=v.get("defect_name", k)) for k, v in dc.items() if isinstance(v, dict)]
    dconf = {d.get("defect_name"): d for d in dc if isinstance(d, dict)}
    classes = man.get("classes") or {}
    samples = {}
    for i, e in enumerate(man["samples"]):
        if not isinstance(e, dict) or "id" not in e:
            raise InputError(mpath, f"samples[{i}]: a sample has no 'id'")
        if str(e["id"]) in samples:
            raise InputError(mpath, f"samples[{i}].id: {e['id']!r} appears twice")
        if not isinstance(e.get("files") or {}, dict) or not _dict_list(e.get("instances")) \
                or not _dict_list(e.get("regions")):
            raise InputError(mpath, f"samples[{i}]: 'files' must be an object, 'instances'/'regions' "
                                    f"lists of objects")
        samples[str(e["id"])] = Sample(data, mpath, e, classes, dconf, i, man.get("integrity"))
    return man, mpath, samples


def load_predictions(pred: Path):
    """(predictions dict, path) of ``<pred>/predictions.json`` (contract section 4): scores are
    numbers, maps relative paths (or null) that resolve inside ``pred`` (:func:`map_path`)."""
    ppath = pred / "predictions.json"
    p = _load_json(ppath)
    if not isinstance(p, dict):
        raise InputError(ppath, "expected a JSON object")
    for k in ("scores", "maps"):
        if not isinstance(p.get(k), dict):
            raise InputError(ppath, f"missing '{k}' object")
    for sid, sc in p["scores"].items():
        if isinstance(sc, bool) or not isinstance(sc, (int, float)):
            raise InputError(ppath, f"scores.{sid}: expected a number, got {sc!r}")
    for sid, rel in p["maps"].items():
        if rel is not None:
            map_path(pred, ppath, sid, rel)
    return p, ppath


def map_path(pred: Path, ppath: Path, sid: str, rel) -> Path:
    """The anomaly map ``maps.<sid>`` of a predictions.json, resolved inside its directory
    (absolute paths, ``..``, symlinks out of it refused; loops reported)."""
    return _contained(Path(pred), rel, ppath, f"maps.{sid}")


# ------------------------------------------------------------------ helpers
def _progress(it, total, what):
    """Minimal stderr progress bar (no extra dependency)."""
    tty = sys.stderr.isatty()
    t0 = time.time()
    for i, x in enumerate(it, 1):
        yield x
        if tty or i == total:
            w = 30
            done = int(w * i / max(total, 1))
            sys.stderr.write(f"\r{what}: [{'#' * done}{'.' * (w - done)}] {i}/{total} {time.time() - t0:.1f}s")
            if i == total:
                sys.stderr.write("\n")
            sys.stderr.flush()


def _nan_to_none(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_nan_to_none(v) for v in x]
    if isinstance(x, np.generic):
        return _nan_to_none(x.item())
    return x


def _thin(*arrays, n=2000):
    """Subsample curve arrays to at most n points for plotting (keeps the ends)."""
    m = len(arrays[0])
    if m <= n:
        return [np.asarray(a).tolist() for a in arrays]
    idx = np.unique(np.r_[np.linspace(0, m - 1, n).astype(int), m - 1])
    return [np.asarray(a)[idx].tolist() for a in arrays]


def _downsample(a, side=EXAMPLE_SIDE):
    import cv2
    h, w = a.shape[:2]
    f = side / max(h, w)
    if f >= 1:
        return a
    size = (max(1, int(round(w * f))), max(1, int(round(h * f))))
    if a.dtype == bool:
        return cv2.resize(a.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    if a.ndim == 3 and a.shape[2] > 4:  # OpenCV resizes at most 4 channels at once (AoLP: cos/sin x RGB)
        return np.stack([cv2.resize(np.ascontiguousarray(a[..., c]), size, interpolation=cv2.INTER_AREA)
                         for c in range(a.shape[2])], axis=-1)
    return cv2.resize(a, size, interpolation=cv2.INTER_AREA)


# ------------------------------------------------------------------ evaluation
def evaluate(pred_dir, data_dir, out_dir, val_pred_dir=None, *, bins=DEFAULT_BINS,
             max_exact_pixels=DEFAULT_MAX_EXACT, fpr_limit=0.3, spro_fpr_limit=0.05,
             min_coverage=0.0, threshold=None, strict=False, report=True, quiet=False,
             n_bootstrap=DEFAULT_RESAMPLES, bootstrap_seed=0) -> dict:
    pred_dir, data_dir, out_dir = Path(pred_dir), Path(data_dir), Path(out_dir)
    man, mpath, samples = load_manifest(data_dir)
    manifest_sha = sha256_file(mpath)
    preds, ppath = load_predictions(pred_dir)
    warnings = []

    def warn(msg):
        warnings.append(msg)
        if not quiet:
            print(f"warning: {msg}", file=sys.stderr)

    if preds.get("manifest_sha256") and preds["manifest_sha256"] != manifest_sha:
        msg = f"{ppath}: manifest_sha256 {preds['manifest_sha256'][:12]}... does not match {mpath} ({manifest_sha[:12]}...)"
        if strict:
            raise InputError(ppath, "manifest_sha256 does not match the dataset manifest")
        warn(msg)
    split, test, val, n_missing = _select_entries(preds, ppath, pred_dir, samples, mpath, val_pred_dir, warn)
    image, curves = _image_metrics(test, ppath, n_bootstrap, bootstrap_seed)

    test_px = [e for e in test if e[2] is not None]
    val_px = [e for e in val if e[2] is not None]
    if len(test_px) < len(test):
        warn(f"{len(test) - len(test_px)} evaluated samples have no anomaly map (pixel metrics skip them)")
    _check_inputs(test_px + val_px)
    kw, total_px = _sweep_settings(test_px, val_px, bins, max_exact_pixels)
    thr_info = _choose_threshold(val_px, kw, threshold, preds, warn)
    px = _PixelPass(kw, fpr_limit, spro_fpr_limit, min_coverage, man.get("classes"),
                    any(e[0].has_regions() for e in test_px), thr_info.get("value") if thr_info else None)
    for s, _, mp in _progress(test_px, len(test_px), f"evaluating {split}"):
        px.add(s, read_map(mp), mp)
    if px.n_no_mask:
        warn(f"{px.n_no_mask} anomalous samples have no mask (left out of the pixel metrics)")
    if not thr_info:
        warn("no validation predictions and no stored threshold: choosing the F1-max threshold on the "
             "evaluated split (optimistic)")
        thr_info = px.threshold_on_test()
    px.curves(curves)
    results = px.results()
    _flag_degenerate(thr_info, results, px, warn)
    metrics = {
        "format": FORMAT, "model": preds.get("model"), "dataset": str(mpath),
        "dataset_name": man.get("name"), "manifest_sha256": manifest_sha,
        "predictions_manifest_sha256": preds.get("manifest_sha256"),
        "manifest_sha256_match": (preds.get("manifest_sha256") == manifest_sha) if preds.get("manifest_sha256") else None,
        "predictions": str(ppath), "split": split, "n_missing_predictions": n_missing,
        "image": image, **results, "threshold": thr_info,
        "ignore": {"n_ignore_images": image["n_ignored"], "n_images_with_ignore_pixels": px.n_ignore_maps,
                   "n_ignore_pixels": px.n_ignore_px, "rules": man.get("ignore_rules"),
                   "note": "ignore pixels are left out of every pixel metric; ignore-only images "
                           "(manifest ignore_image) out of the image-level metrics"},
        "approximation": {
            "mode": kw["mode"], "bins": bins if kw["mode"] == "hist" else None, "value_range": kw["value_range"],
            "max_exact_pixels": max_exact_pixels, "n_pixels": total_px,
            "note": ("exact sweeps over every distinct score" if kw["mode"] != "hist" else
                     "fixed-bin histograms; pixel AUROC within +-pixel.auroc_error_bound, exact AP in "
                     "[pixel.ap_lower, pixel.ap_upper], AUPRO/sPRO within +-error_bound; the F1-max "
                     "threshold and every thresholded metric are exact (candidate bins rescanned: "
                     "identical to exact mode)"),
        },
        "warnings": warnings,
    }
    metrics = _nan_to_none(metrics)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(out_dir / "metrics.json", metrics, indent=2)
    _write_json(out_dir / "curves.json", _nan_to_none(curves))
    if report:
        from .report import build_report
        build_report(metrics, curves, _finish_examples(px.examples), out_dir)
    return metrics


def _write_json(path: Path, obj, indent=None) -> None:
    """Atomic JSON write (temporary file in the same directory, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=indent)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _select_entries(preds, ppath, pred_dir, samples, mpath, val_pred_dir, warn):
    """(split, evaluated entries, validation entries, n_missing); an entry is (sample, score, map path)."""
    def entries(p, path, root):
        out = []
        for sid, sc in p["scores"].items():
            if sid not in samples:
                raise InputError(path, f"sample id {sid!r} is not in {mpath}")
            rel = p["maps"].get(sid)
            out.append((samples[sid], float(sc), None if rel is None else map_path(root, path, sid, rel)))
        return out

    split = preds.get("split") or "test"
    all_entries = entries(preds, ppath, pred_dir)
    test = [e for e in all_entries if e[0].split == split]
    val = [e for e in all_entries if e[0].split == "val" and split != "val"]
    if val_pred_dir is not None:
        vp, vpath = load_predictions(Path(val_pred_dir))
        seen = {e[0].id for e in val}
        val += [e for e in entries(vp, vpath, Path(val_pred_dir)) if e[0].split == "val" and e[0].id not in seen]
    if not test:
        raise InputError(ppath, f"no prediction for any sample of split {split!r} in {mpath}")
    n_missing = sum(1 for s in samples.values() if s.split == split) - len(test)
    if n_missing:
        warn(f"{n_missing} {split} samples of the manifest have no prediction; evaluated {len(test)}")
    return split, test, val, n_missing


# Anomaly groups of the issue-13 benchmark: structural defects change the part's shape,
# impurities sit on it, logical anomalies are wrong parts or part arrangements.
CLASS_GROUPS = {"structural": ("dent", "bump", "scratch", "chip"), "impurity": ("water_stain",),
                "logical": ("missing", "extra", "swapped")}


def _image_auroc_by_class(kept, scores: np.ndarray, labels: np.ndarray) -> dict:
    """Image AUROC of each anomaly class and group: the normal images against the anomalous
    images that hold an instance of that class (of any class of the group); an image with
    several classes counts for each. Classes: the manifest sample's ``classes``."""
    normal = ~labels
    if not normal.any():
        return {}
    has = [set(e[0].e.get("classes") or []) for e in kept]
    sets = {c: {c} for c in sorted(set().union(*has))} if has else {}
    out = {"auroc_by_class": {}, "auroc_by_group": {}}
    for key, members in [("auroc_by_class", sets), ("auroc_by_group", {g: set(v) for g, v in CLASS_GROUPS.items()})]:
        for name, cls in members.items():
            pos = labels & np.array([bool(h & cls) for h in has])
            if pos.any():
                sel = normal | pos
                out[key][name] = {"auroc": binary_auroc(scores[sel], pos[sel]), "n_anomalous": int(pos.sum())}
    return out


def _image_metrics(test, ppath, n_bootstrap, seed):
    """Image-level AUROC (with its stratified bootstrap interval) and AP; ignore-only images
    (manifest ``ignore_image``) are left out."""
    kept = [e for e in test if not e[0].ignore_image]
    img_scores = np.array([e[1] for e in kept], np.float64)
    img_labels = np.array([e[0].label for e in kept], bool)
    if not np.isfinite(np.array([e[1] for e in test], np.float64)).all():
        raise InputError(ppath, "image scores contain NaN or infinite values")
    image = {"n": len(kept), "n_anomalous": int(img_labels.sum()), "n_normal": int((~img_labels).sum()),
             "n_ignored": len(test) - len(kept),
             "auroc": binary_auroc(img_scores, img_labels) if kept else float("nan"),
             "ap": binary_average_precision(img_scores, img_labels) if img_labels.any() else float("nan")}
    if n_bootstrap:
        ci = auroc_bootstrap_ci(img_scores, img_labels, n_resamples=n_bootstrap, seed=seed)
        image.update(auroc_ci_low=ci["low"], auroc_ci_high=ci["high"],
                     auroc_ci={k: ci[k] for k in ("level", "n_resamples", "seed", "method")})
    image.update(_image_auroc_by_class(kept, img_scores, img_labels))
    curves = {}
    if img_labels.any() and (~img_labels).any():
        fpr, tpr, _ = binary_roc_curve(img_scores, img_labels)
        pr, rc, _ = binary_pr_curve(img_scores, img_labels)
        curves["image_roc"] = {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
        curves["image_pr"] = {"precision": pr.tolist(), "recall": rc.tolist()}
    return image, curves


def _check_inputs(entries) -> None:
    """Before any metric: each map (bounds from the header; size = the sample's manifest
    ``size``, so a wrong-size map is named, not its mask; then decoded once: 2-D, finite)
    and each sample's ground-truth files (paths, bounds, size, sha256: ``Sample.check_files``).
    Maps are single-channel float32, so the extra decode costs about as much as one more
    metric pass over them."""
    from polar_render.limits import image_dims
    for s, _, mp in entries:
        _check_image(mp, "anomaly map")
        size = s.e.get("size")
        if _is_size(size):
            try:
                dims = image_dims(mp)
            except Exception as e:  # noqa: BLE001
                raise InputError(mp, f"cannot read TIFF ({e})") from e
            if dims is not None and (dims[1], dims[0]) != tuple(size):
                raise InputError(mp, f"anomaly map is {dims[1]}x{dims[0]} (HxW) but sample {s.id!r} is "
                                     f"{size[0]}x{size[1]} ({s.manifest_path}: samples[{s.index}].size)")
        read_map(mp)
        s.check_files()


def _sweep_settings(test_px, val_px, bins, max_exact_pixels):
    """Exact sweeps or fixed-bin histograms over the global score range -> (kwargs, n pixels)."""
    total_px = sum(map_pixels(e[2]) for e in test_px)
    total_val = sum(map_pixels(e[2]) for e in val_px)
    use_hist = max(total_px, total_val) > max_exact_pixels
    value_range = None
    if use_hist:
        lo, hi = np.inf, -np.inf
        for e in _progress(test_px + val_px, len(test_px) + len(val_px), "score range"):
            a = read_map(e[2])
            lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
        value_range = (lo, hi)
    return dict(mode="hist" if use_hist else "exact", bins=bins, value_range=value_range), total_px


def _flag_degenerate(thr_info: dict, results: dict, px, warn) -> None:
    """Mark a threshold that flags most normal pixels or images (``metrics.threshold_degeneracy``)
    in ``threshold`` and in every section that depends on it; warn once."""
    tm = results.get("thresholded")
    if not thr_info or tm is None:
        return
    d = threshold_degeneracy(tm["fp"], tm["fp"] + tm["tn"], px.n_normal_images_flagged, px.n_normal_images)
    thr_info["degenerate"], thr_info["degeneracy"] = d["degenerate"], d
    for key in ("thresholded", "defect_wise_recall"):
        if results.get(key) is not None:
            results[key]["threshold_degenerate"] = d["degenerate"]
    if d["degenerate"]:
        warn(f"degenerate threshold {thr_info['value']:.6g} ({thr_info.get('source')}): {d['reason']}")


def _f1_pass(f1m, entries, what, feed) -> None:
    """One streaming pass of (map, mask, ignore) over ``entries`` into ``feed``."""
    for s, _, mp in _progress(entries, len(entries), what):
        a = read_map(mp)
        m = s.mask(a.shape)
        if m is not None:
            feed(a, m, s.ignore(a.shape))


def _choose_threshold(val_px, kw, threshold, preds, warn) -> dict:
    """Command line > F1-max on val (ignore pixels left out) > predictions.json; {} = choose on test."""
    if threshold is not None:
        return {"value": float(threshold), "source": "command line"}
    if val_px:
        f1m = F1OptimalThreshold(**kw)
        _f1_pass(f1m, val_px, "validation", f1m.update)
        if f1m.needs_refinement:       # histogram mode: rescan the candidate bins exactly
            f1m.start_refinement()
            _f1_pass(f1m, val_px, "validation (exact threshold)", f1m.refine)
        r = f1m.compute()
        if r["threshold"] is not None:
            return {"value": r["threshold"], "source": "val (F1-max)", "n_val_images": len(val_px),
                    "val_f1": r["f1"], "val_precision": r["precision"], "val_recall": r["recall"],
                    "mode": r.get("mode"), "exact": r.get("exact")}
        warn("validation predictions have no anomalous pixel; threshold falls back")
    if preds.get("threshold") is not None:
        return {"value": float(preds["threshold"]), "source": "predictions.json"}
    return {}


class _PixelPass:
    """Every pixel metric of the evaluated split, fed one map at a time; ignore pixels are left
    out of all of them.  With ``thr`` None the threshold is chosen on this split afterwards
    (``threshold_on_test``, a second pass over the kept maps)."""

    def __init__(self, kw, fpr_limit, spro_fpr_limit, min_coverage, class_kinds, has_regions, thr):
        self.kw, self.min_coverage, self.class_kinds = kw, min_coverage, class_kinds
        self.roc, self.roc_part = BinaryROC(**kw), BinaryROC(**kw)
        self.pro = AUPRO(fpr_limit, **kw)
        self.spro = AUsPRO(spro_fpr_limit, **kw) if has_regions else None
        self.f1_test = F1OptimalThreshold(**kw) if thr is None else None
        self.kept, self.examples = [], {}
        self.n_no_mask = self.n_part = self.n_ignore_maps = self.n_ignore_px = 0
        self.n_normal_images = self.n_normal_images_flagged = 0
        self.prf = self.dwr = None
        if thr is not None:
            self._set_threshold(thr)

    def _set_threshold(self, thr):
        self.thr = thr
        self.prf = ThresholdedPRF(thr)
        self.dwr = DefectWiseRecall(self.min_coverage, class_kinds=self.class_kinds)

    def add(self, s, a, mp):
        m = s.mask(a.shape)
        if m is None:
            self.n_no_mask += 1
            return
        g = s.ignore(a.shape)
        if g is not None:
            self.n_ignore_maps += 1
            self.n_ignore_px += int(g.sum())
        self.roc.update(a, m, g)
        part = s.object_mask(a.shape)
        if part is not None:
            self.n_part += 1
            self.roc_part.update(a[part], m[part], None if g is None else g[part])
        self.pro.update(a, m, g)
        if self.spro is not None:
            self.spro.update(a, *s.regions(a.shape, m), ignore=g)
        if self.f1_test is not None:
            self.f1_test.update(a, m, g)
            self.kept.append((s, mp))
        else:
            self._thresholded(s, a, m, g)

    def _thresholded(self, s, a, m, g):
        pos = a >= self.thr
        self.prf.update(a, m, g)
        if not s.label and not s.ignore_image:   # normal images with any predicted-positive pixel
            self.n_normal_images += 1
            self.n_normal_images_flagged += bool((pos if g is None else pos & ~g).any())
        im, inst = s.instances(a.shape, m)
        if im is not None and inst:
            self.dwr.update(pos, im, inst, sample_id=s.id)
        _collect_example(self.examples, s, a, m, pos)

    def threshold_on_test(self) -> dict:
        if self.f1_test.needs_refinement:   # histogram mode: rescan the candidate bins exactly
            self.f1_test.start_refinement()
            _f1_pass(self.f1_test, [(s, None, mp) for s, mp in self.kept], "test (exact threshold)",
                     self.f1_test.refine)
        r = self.f1_test.compute()
        if r["threshold"] is not None:
            self._set_threshold(r["threshold"])
            for s, mp in self.kept:  # second pass: the threshold is known only now
                a = read_map(mp)
                self._thresholded(s, a, s.mask(a.shape), s.ignore(a.shape))
        return {"value": r["threshold"], "source": "test (optimistic)", "test_f1": r["f1"]}

    def results(self) -> dict:
        part = self.roc_part.compute()
        part["n_images"] = self.n_part
        if not self.n_part:
            part["note"] = "no object_mask in the dataset (build it from renders to get the part mask)"
        dwr = self.dwr.compute() if self.dwr is not None else None
        return {"pixel": self.roc.compute(), "pixel_part": part, "aupro": self.pro.compute(),
                "spro": self.spro.compute() if self.spro is not None else
                {"value": None, "note": "no LOCO region annotation in the manifest"},
                "thresholded": self.prf.compute() if self.prf is not None else None,
                "defect_wise_recall": dwr,
                "instance_detection_rate": None if dwr is None else
                {c: v["recall"] for c, v in dwr["per_class"].items()}}

    def curves(self, curves):
        pixel = self.roc.compute()
        if pixel["n_pos"] and pixel["n_neg"]:
            fpr, tpr, _ = self.roc.roc_curve()
            pr, rc, _ = self.roc.pr_curve()
            curves["pixel_roc"] = dict(zip(("fpr", "tpr"), _thin(fpr, tpr)))
            curves["pixel_pr"] = dict(zip(("precision", "recall"), _thin(pr, rc)))
        if self.pro.compute().get("value") is not None:
            f, p, _ = self.pro.curve()
            curves["pro"] = dict(zip(("fpr", "pro"), _thin(f, p)))
        if self.spro is not None and self.spro.compute().get("value") is not None:
            f, p, _ = self.spro.curve()
            curves["spro"] = dict(zip(("fpr", "spro"), _thin(f, p)))


def _collect_example(examples, s, a, m, pos):
    """Keep up to N_EXAMPLES_PER_CLASS anomalous samples per class and the highest-scoring normal
    sample, downsampled, with their modalities."""
    if s.label:
        keys = s.e.get("classes") or [i.get("class") for i in s.e.get("instances") or []] or ["anomalous"]
    else:
        keys = ["good"]
    for k in dict.fromkeys(keys):
        lst = examples.setdefault(k, [])
        score = float(a.max())
        if k == "good":
            if lst and lst[0]["max_score"] >= score:
                continue
            lst.clear()
        elif len(lst) >= N_EXAMPLES_PER_CLASS:
            continue
        lst.append({"id": s.id, "class": k, "max_score": score,
                    "map": _downsample(a), "mask": _downsample(m), "pred": _downsample(pos),
                    "modalities": [(n, _downsample(x)) for n, x in s.modality_images()]})


def _finish_examples(examples):
    out = []
    for k in sorted(examples, key=lambda c: (c == "good", c)):
        out.extend(examples[k])
    return out


# ------------------------------------------------------------------ CLI
def option_error(a) -> str | None:
    """The first out-of-range option (a one-line message naming it), checked before any work."""
    checks = [
        ("--fpr-limit", a.fpr_limit, 0 < a.fpr_limit <= 1, "in (0, 1]"),
        ("--spro-fpr-limit", a.spro_fpr_limit, 0 < a.spro_fpr_limit <= 1, "in (0, 1]"),
        ("--min-coverage", a.min_coverage, 0 <= a.min_coverage <= 1, "in [0, 1]"),
        ("--bins", a.bins, a.bins >= 2, ">= 2"),
        ("--max-exact-pixels", a.max_exact_pixels, a.max_exact_pixels >= 0, ">= 0"),
        ("--bootstrap", a.bootstrap, a.bootstrap >= 0, ">= 0"),
        ("--threshold", a.threshold, a.threshold is None or math.isfinite(a.threshold), "a finite number"),
    ]
    for flag, value, ok, what in checks:
        if not ok:
            return f"{flag} {value}: must be {what}"
    return None


def summary(m: dict, data, where) -> str:
    """The console summary; metrics that depend on a degenerate threshold are shown in
    brackets as trivial, with the reason on a second line, never as plain results."""
    def f(x):
        return "n/a" if x is None else f"{x:.4f}"
    th = m.get("threshold") or {}
    bad = bool(th.get("degenerate"))

    def dep(x):
        return f"({f(x)}: trivial, degenerate threshold)" if bad else f(x)
    dw = m["defect_wise_recall"] or {}
    line = (f"{m['model'] or 'model'} on {m['dataset_name'] or data}/{m['split']}: "
            f"image AUROC {f(m['image']['auroc'])}"
            + (f" [{f(m['image'].get('auroc_ci_low'))}, {f(m['image'].get('auroc_ci_high'))}]"
               if "auroc_ci_low" in m["image"] else "")
            + f", pixel AUROC {f(m['pixel']['auroc'])} (part {f(m['pixel_part'].get('auroc'))}), "
            f"AUPRO@{m['aupro']['fpr_limit']} {f(m['aupro'].get('value'))}, "
            f"F1 {dep((m['thresholded'] or {}).get('f1'))}, mR_DW {dep(dw.get('mR_DW'))} "
            f"-> report: {os.fspath(where)}")
    if bad:
        line += (f"\nDEGENERATE THRESHOLD {th['value']:.6g} ({th.get('source')}): "
                 f"{th['degeneracy']['reason']}")
    return line


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m polar_detect.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--pred", required=True, type=Path, help="predictions dir (predictions.json + maps/)")
    ap.add_argument("--data", required=True, type=Path, help="dataset dir (manifest.json)")
    ap.add_argument("--out", required=True, type=Path, help="output dir for metrics.json, report.html, PNGs")
    ap.add_argument("--val-pred", type=Path, default=None, help="predictions on the val split (threshold)")
    ap.add_argument("--threshold", type=float, default=None, help="override the pixel threshold")
    ap.add_argument("--fpr-limit", type=float, default=0.3, help="AUPRO FPR limit (default 0.3)")
    ap.add_argument("--spro-fpr-limit", type=float, default=0.05, help="AU-sPRO FPR limit (default 0.05)")
    ap.add_argument("--min-coverage", type=float, default=0.0,
                    help="defect-wise recall coverage fraction (default 0: at least one pixel)")
    ap.add_argument("--bins", type=int, default=DEFAULT_BINS, help="histogram bins in memory-bounded mode")
    ap.add_argument("--max-exact-pixels", type=int, default=DEFAULT_MAX_EXACT,
                    help="exact sweeps up to this many pixels, histograms above")
    ap.add_argument("--bootstrap", type=int, default=DEFAULT_RESAMPLES,
                    help="stratified bootstrap resamples for the image AUROC 95%% interval (0: none)")
    ap.add_argument("--bootstrap-seed", type=int, default=0, help="seed of the bootstrap resamples")
    ap.add_argument("--strict", action="store_true", help="exit 2 when manifest_sha256 does not match")
    ap.add_argument("--no-report", action="store_true", help="write metrics.json only")
    a = ap.parse_args(argv)
    bad = option_error(a)
    if bad:
        print(f"error: {bad}", file=sys.stderr)
        return 2
    try:
        m = evaluate(a.pred, a.data, a.out, a.val_pred, bins=a.bins, max_exact_pixels=a.max_exact_pixels,
                     fpr_limit=a.fpr_limit, spro_fpr_limit=a.spro_fpr_limit, min_coverage=a.min_coverage,
                     threshold=a.threshold, strict=a.strict, report=not a.no_report,
                     n_bootstrap=a.bootstrap, bootstrap_seed=a.bootstrap_seed)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    where = a.out / ("report.html" if not a.no_report else "metrics.json")
    print(summary(m, a.data, where))
    return 0


if __name__ == "__main__":
    sys.exit(main())
