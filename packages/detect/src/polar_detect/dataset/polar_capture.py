"""Real polarization-camera captures -> the same modalities as rendered data.

Two input forms (one directory of frames):

* four angle images per frame, named ``<frame>_<angle>.<ext>`` (also ``<frame>-<angle>``,
  ``<frame>_pol<angle>``, ``<frame>_I<angle>``), angle in {0, 45, 90, 135} degrees from the
  image x axis (counter-clockwise on screen, as polar_render); grey or RGB;
* one raw division-of-focal-plane (DoFP) mosaic per frame: a single-channel image whose
  2x2 super-pixels carry four polarizer orientations. ``layout`` gives the angle at
  (row 0, col 0), (0, 1), (1, 0), (1, 1); default ``90,45,135,0`` = Sony IMX250MZR /
  IMX264MZR (Lucid Phoenix/Triton, FLIR Blackfly S "Polarsens")::

        row 0:  90  45
        row 1: 135   0

  Colour DoFP sensors (IMX250MYR, 4x4 Bayer x polarizer super-pixels) are not supported.

Demosaicing: bilinear per angle, as normalised convolution. Each angle is sampled on a
lattice of pitch 2; the zero-filled lattice is convolved with the tent kernel
[1, 2, 1]^T [1, 2, 1] / 4 and divided by the same convolution of the lattice's indicator,
so samples are kept exactly, in-between pixels are the mean of their 2 or 4 lattice
neighbours, and the border (where neighbours are missing) averages those present instead of
darkening. Exact for images linear in x, y away from the 1-px border; for a smooth image
the interior error is at most 0.5 * (max|f_xx| + max|f_yy|) (second differences in px),
i.e. about 2 pi^2 A / P^2 for a sinusoid of amplitude A and period P px (< 1 % of the
range for P >= 48 px; tests check both). On the last row/column, where one neighbour is
missing, the value is the nearest sample's: off by at most one pixel step in x plus one in y. Each angle is interpolated at its own 1-px offset
(instantaneous field of view error): fine detail near edges shows false polarization,
as with every per-channel DoFP interpolation.

Polarization quantities come from ``polar_render.polarization`` (the renderer's own Stokes
algebra): S = stokes_from_polarizer_images(I0, I45, I90, I135) (S0, S1, S2), DoLP, AoLP.
Values stay in the camera's DN (float32); intensity-like modalities are normalised by the
99.5th percentile of S0 over the imported frames unless ``scale`` is given (or the loader
is handed the synthetic training set's normalisation: ``PolarDataset(..., normalisation=<train data>)``).
``normals`` cannot be measured and is refused.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import cv2
import numpy as np

from . import encodings as enc
from .encodings import DatasetError
from .images import components, inside, list_images, read_image
from .writer import DatasetWriter, split_counts

DEFAULT_LAYOUT = ((90, 45), (135, 0))
CAPTURE_MODALITIES = tuple(m for m in enc.MODALITIES if m != "normals")
_ANGLE_RE = re.compile(r"^(?P<frame>.+?)[_-](?:pol|I|i)?(?P<angle>0|45|90|135)$")
_TENT = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0]) / 4.0


def parse_layout(text) -> tuple[tuple[int, int], tuple[int, int]]:
    """"90,45,135,0" (row-major 2x2) -> ((90, 45), (135, 0)); must be a permutation of 0/45/90/135."""
    if isinstance(text, str):
        vals = [int(v) for v in text.replace(" ", "").split(",") if v]
    else:
        vals = [int(v) for v in np.asarray(text).ravel()]
    if sorted(vals) != [0, 45, 90, 135]:
        raise DatasetError(f"mosaic layout must be the four angles 0,45,90,135 in row-major order, got {text!r}")
    return (vals[0], vals[1]), (vals[2], vals[3])


def _offsets(layout) -> dict[int, tuple[int, int]]:
    layout = parse_layout(layout)
    return {layout[r][c]: (r, c) for r in range(2) for c in range(2)}


def mosaic(images: dict[int, np.ndarray], layout=DEFAULT_LAYOUT) -> np.ndarray:
    """Simulate a DoFP sensor: (H, W) angle images -> one (H, W) mosaic (H, W even)."""
    first = next(iter(images.values()))
    raw = np.zeros(first.shape, dtype=first.dtype)
    for angle, (r, c) in _offsets(layout).items():
        raw[r::2, c::2] = images[angle][r::2, c::2]
    return raw


def demosaic(raw: np.ndarray, layout=DEFAULT_LAYOUT) -> dict[int, np.ndarray]:
    """(H, W) mosaic -> {0: I0, 45: I45, 90: I90, 135: I135}, each float32 (H, W), bilinear."""
    raw = np.asarray(raw)
    if raw.ndim != 2:
        raise DatasetError(f"a DoFP mosaic is single-channel, got shape {raw.shape} (colour DoFP is not supported)")
    h, w = raw.shape
    if h % 2 or w % 2 or h < 2 or w < 2:
        raise DatasetError(f"a DoFP mosaic needs even height and width, got {raw.shape}")
    x = raw.astype(np.float64)
    out = {}
    for angle, (r, c) in _offsets(layout).items():
        ind = np.zeros((h, w), np.float64)
        ind[r::2, c::2] = 1.0
        num = cv2.filter2D(x * ind, -1, _TENT, borderType=cv2.BORDER_CONSTANT)
        den = cv2.filter2D(ind, -1, _TENT, borderType=cv2.BORDER_CONSTANT)
        out[angle] = (num / den).astype(np.float32)
    return out


def polar_modalities(pol: dict[int, np.ndarray], modalities=CAPTURE_MODALITIES) -> dict[str, np.ndarray]:
    """Four polarizer images (H, W[, C]) -> dataset-encoded modalities (float32, (H, W, C))."""
    from polar_render.polarization import aolp, dolp, stokes_from_polarizer_images

    ims = {a: enc.as_hwc(pol[a]).astype(np.float32) for a in enc.POL_ANGLES}
    st = stokes_from_polarizer_images(ims[0], ims[45], ims[90], ims[135]).astype(np.float32)  # (3, H, W, C)
    out = {}
    for m in modalities:
        if m == "intensity":
            out[m] = st[0]
        elif m == "stokes":
            out[m] = np.concatenate([st[0], st[1], st[2]], axis=-1)
        elif m == "dolp":
            out[m] = dolp(st)
        elif m == "aolp":
            out[m] = enc.encode_aolp(aolp(st))
        elif m.startswith("pol"):
            out[m] = ims[int(m[3:])]
        else:
            raise DatasetError(f"modality {m!r} cannot be computed from polarization captures; "
                               f"choose from {', '.join(CAPTURE_MODALITIES)}")
    return out


def find_frames(src: Path, mode: str = "auto") -> tuple[str, dict[str, object]]:
    """-> (mode, {frame name: {angle: path}} for 'angles' or {frame name: path} for 'mosaic')."""
    files = list_images(src)
    if not files:
        raise DatasetError(f"{src}: no images (.png, .tif, ...)")
    groups: dict[str, dict[int, Path]] = {}
    for p in files:
        m = _ANGLE_RE.match(p.stem)
        if m:
            groups.setdefault(m["frame"], {})[int(m["angle"])] = p
    if mode == "auto":
        mode = "angles" if groups else "mosaic"
    if mode == "mosaic":
        return mode, {p.stem: p for p in files}
    if mode != "angles":
        raise DatasetError(f"capture mode must be auto, angles or mosaic, got {mode!r}")
    for frame, g in groups.items():
        missing = sorted(set(enc.POL_ANGLES) - set(g))
        if missing:
            raise DatasetError(f"{src}: frame {frame!r} lacks the angle image(s) {missing} "
                               f"(expected {frame}_0/_45/_90/_135)")
    if not groups:
        raise DatasetError(f"{src}: no <frame>_<angle> images found")
    return mode, dict(sorted(groups.items()))


def read_frame(mode: str, entry, layout) -> dict[int, np.ndarray]:
    if mode == "mosaic":
        return demosaic(read_image(entry), layout)
    ims = {a: read_image(p) for a, p in entry.items()}
    shapes = {a: im.shape for a, im in ims.items()}
    if len(set(shapes.values())) != 1:
        raise DatasetError(f"angle images differ in shape: " + ", ".join(f"{entry[a]}: {s}" for a, s in shapes.items()))
    return ims


def import_polar(src: str | Path, out: str | Path, modalities=("intensity", "aolp", "dolp"), mode: str = "auto",
                 layout=DEFAULT_LAYOUT, split: str = "test", masks: str | Path | None = None,
                 scale: float | None = None, name: str | None = None, overwrite: bool = False,
                 progress: bool = True) -> tuple[dict, str]:
    """Import a directory of captures; labels from ``masks/<frame>.png`` (or ``<frame>_mask.png``)
    when given (instances = connected components, class "anomaly"); otherwise label 0, no mask,
    and the sample is marked ``"labelled": false``."""
    from tqdm import tqdm

    src = Path(src)
    if not src.is_dir():
        raise DatasetError(f"{src}: not a directory of captures")
    if masks is not None and not Path(masks).is_dir():
        raise DatasetError(f"{masks}: --masks is not a directory of <frame>.png / <frame>_mask.png masks")
    mods = enc.check_modalities(modalities, CAPTURE_MODALITIES)
    layout = parse_layout(layout)
    mode, frames = find_frames(src, mode)
    s0_values, colour = [], None
    classes = {}
    out = Path(out)
    with DatasetWriter(out, name or out.name, None, overwrite) as w:
        for frame, entry in tqdm(frames.items(), desc=f"import {src.name}", unit="frame", disable=not progress,
                                 file=sys.stderr):
            pol = read_frame(mode, entry, layout)
            arrays = polar_modalities(pol, mods)
            c = enc.as_hwc(pol[0]).shape[-1]
            if colour is None:
                colour = ["Y"] if c == 1 else ["R", "G", "B"][:c] if c == 3 else [f"c{k}" for k in range(c)]
            elif len(colour) != c:
                raise DatasetError(f"{entry}: {c} channels, earlier frames {len(colour)}")
            s0_values.append(enc.subsample(polar_modalities(pol, ["intensity"])["intensity"]))
            mask, inst_mask, inst, labelled = None, None, [], masks is not None
            if masks is not None:
                cands = [inside(masks, f"{frame}.png"), inside(masks, f"{frame}_mask.png")]
                found = [p for p in cands if p.is_file()]
                if found:
                    mk = read_image(found[0])
                    mask = (mk.max(axis=-1) if mk.ndim == 3 else mk) > 0
                    inst_mask, n = components(mask)
                    inst = [{"id": k, "class": "anomaly", "kind": "defect"} for k in range(1, n + 1)]
                    if n:
                        classes["anomaly"] = "defect"
                    else:
                        mask = inst_mask = None
            w.add(frame, split, int(bool(inst)), str(Path(entry if mode == "mosaic" else src).resolve()), arrays,
                  mask=mask, instance_mask=inst_mask, instances=inst, classes=[a["class"] for a in inst],
                  labelled=labelled, capture_mode=mode)
        s = float(scale) if scale else enc.robust_scale(np.concatenate(s0_values))
        src_text = "given scale" if scale else f"{enc.SCALE_PERCENTILE}th percentile of S0 over the imported frames"
        modal = {m: enc.modality_entry(m, colour, s, src_text, "DN" if m in enc.INTENSITY_LIKE else "") for m in mods}
        manifest = w.finish(modal, classes, allow_empty_train=split != "train", source_kind="polar_capture",
                            source=str(src.resolve()), capture_mode=mode,
                            mosaic_layout=[list(r) for r in layout] if mode == "mosaic" else None,
                            demosaic="bilinear (normalised convolution), per angle" if mode == "mosaic" else None,
                            colour_channels=colour)
    return manifest, f"{len(manifest['samples'])} {mode} frames ({split_counts(manifest['samples'])}) -> {out}"
