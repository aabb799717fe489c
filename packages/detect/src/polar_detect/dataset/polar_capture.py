"""Real polarization-camera captures -> the same modalities as rendered data.

Two input forms (one directory of frames):

* four angle images per frame, named ``<frame>_<angle>.<ext>`` (also ``<frame>-<angle>``,
  ``<frame>_pol<angle>``, ``<frame>_I<angle>``), angle in {0, 45, 90, 135} degrees from the
  image x axis (counter-clockwise on screen, as polar_render); grey or RGB;
* one raw division-of-focal-plane (DoFP) mosaic per frame: a single-channel image whose
  2x2 super-pixels carry four polarizer orientations. ``layout`` gives the angle at
  (row 0, col 0), (0, 1), (1, 0), (1, 1); default ``90,45,135,0`` = Sony IMX250MZR /
  IMX264MZR. Layout parsing and bilinear demosaicing are ``polar_render.physics.dofp``'s
  (the renderer's own DoFP code, so simulated and real mosaics are decoded alike; see its
  docstring for the interpolation error bounds). Colour DoFP sensors (IMX250MYR, 4x4
  Bayer x polarizer super-pixels) are not supported.

Polarization quantities come from ``polar_render.physics.polarization`` (the renderer's own Stokes
algebra): S = stokes_from_polarizer_images(I0, I45, I90, I135) (S0, S1, S2), DoLP, AoLP.
Values stay in the camera's DN (float32); intensity-like modalities are normalised by the
99.5th percentile of S0 over the imported frames unless ``scale`` is given (or the loader
is handed the synthetic training set's normalisation: ``PolarDataset(..., normalisation=<train data>)``).
``normals`` cannot be measured and is refused.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from polar_render.physics import dofp
from polar_render.physics.polarization import aolp, dolp, stokes_from_polarizer_images

from polar_detect.dataset import encodings as enc
from polar_detect.dataset.encodings import DatasetError
from polar_detect.dataset.images import components, inside, list_images, read_image
from polar_detect.dataset.writer import DatasetWriter, split_counts
from polar_render.progress import progress as progress_bar

CAPTURE_MODALITIES = tuple(m for m in enc.MODALITIES if m != "normals")
_ANGLE_RE = re.compile(r"^(?P<frame>.+?)[_-](?:pol|I|i)?(?P<angle>0|45|90|135)$")


def parse_layout(value) -> tuple[tuple[int, int], tuple[int, int]]:
    """``dofp.parse_layout`` with a bad layout reported as :class:`DatasetError` (CLI exit 2)."""
    try:
        return dofp.parse_layout(value)
    except ValueError as exc:
        raise DatasetError(f"mosaic {exc}") from None


def polar_modalities(pol: dict[int, np.ndarray], modalities=CAPTURE_MODALITIES) -> dict[str, np.ndarray]:
    """Four polarizer images (H, W[, C]) -> dataset-encoded modalities (float32, (H, W, C))."""
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
    """Four angle images of one frame: read as they are, or demosaiced from one mosaic."""
    if mode == "mosaic":
        try:
            return dofp.demosaic(read_image(entry), layout)
        except ValueError as exc:
            if isinstance(exc, DatasetError):
                raise
            raise DatasetError(f"{entry}: {exc}") from None
    ims = {a: read_image(p) for a, p in entry.items()}
    shapes = {a: im.shape for a, im in ims.items()}
    if len(set(shapes.values())) != 1:
        raise DatasetError(f"angle images differ in shape: " + ", ".join(f"{entry[a]}: {s}" for a, s in shapes.items()))
    return ims


def import_polar(src: str | Path, out: str | Path, modalities=("intensity", "aolp", "dolp"), mode: str = "auto",
                 layout=dofp.DEFAULT_LAYOUT, split: str = "test", masks: str | Path | None = None,
                 scale: float | None = None, name: str | None = None, overwrite: bool = False,
                 progress: bool = True) -> tuple[dict, str]:
    """Import a directory of captures; labels from ``masks/<frame>.png`` (or ``<frame>_mask.png``)
    when given (instances = connected components, class "anomaly"); otherwise label 0, no mask,
    and the sample is marked ``"labelled": false``."""
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
        for frame, entry in progress_bar(frames.items(), desc=f"import {src.name}", unit="frame",
                                         enabled=progress):
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
