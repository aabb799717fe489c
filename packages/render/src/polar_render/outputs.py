"""The sample contract: what a rendered sample directory holds, and what readers may rely on.

A run writes sample ``i`` to ``<out>/samples/<i:06d>/`` (:func:`sample_dir`). The directory is
built under a temporary name and renamed into place when every file is written, so a sample
is complete exactly when its ``meta.json`` exists (:func:`is_complete`).

Files (:data:`MODALITIES`; ``C`` = colour channels: ``R, G, B`` for an RGB sensor, ``Y`` for mono;
meta.json ``files[name]`` records each one's path, dtype, shape, channel names and units):

================  ====================================================================
``stokes``        float32 TIFF (H, W, 4*C): S0..S3, channels ``S0.R, S0.G, S0.B, S1.R, ...``;
                  radiance, scene units; reference axis: image x (right).
``pol0..135``     uint16 PNG: intensity behind a linear polarizer at 0/45/90/135 degrees
                  (from the image x axis), ``DN = round(I * exposure_scale)``, one
                  ``exposure_scale`` shared by the four images (meta.json, and each entry).
``intensity``     float32 TIFF (H, W, C), (H, W) for mono: unpolarized intensity I_un = S0.
``dolp``          float32 TIFF, in [0, 1].
``aolp``          float32 TIFF, radians in [-pi/2, pi/2], from the image x axis,
                  counter-clockwise on screen.
``normals``       float32 TIFF (H, W, 3): unit shading normals, OpenCV camera frame (x right,
                  y down, z forward; surfaces facing the camera have n_z < 0); 0 = no surface.
``depth``         float32 TIFF (H, W): metres along the optical axis (camera z); 0 = no hit.
``object_mask``   uint16 PNG: BOP instance index (1-based, order of scene_gt.json); 0 = none.
``anomaly_mask``  uint16 PNG: anomaly instance id (meta.json ``anomalies``); 0 = none.
``part_mask``     uint16 PNG: global part id (meta.json ``parts``); 0 = none.
``raw_mosaic``    uint16 PNG, only with ``sensor.dofp.enabled``: a simulated DoFP sensor's DN
                  (``physics.dofp``); its entry's ``sensor`` holds the sensor model.
================  ====================================================================

Mono images are stored 2-D, (H, W): a TIFF cannot tell (H, W, 1) from (H, W).
:data:`META_KEYS` lists the meta.json keys that readers (``polar_detect.dataset``, the
benchmarks, the tests) depend on. :func:`load_sample` reads a sample back through
:mod:`polar_render.io`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from polar_render import io
from polar_render.physics.polarization import POLARIZER_ANGLES_DEG

SAMPLES_DIR = "samples"
META_FILE = "meta.json"


@dataclass(frozen=True)
class Modality:
    """One file of a sample: its name in the directory, dtype and the units meta.json states.
    ``channels``: fixed channel names, or None where they depend on the sensor (given per sample)."""
    file: str
    dtype: str
    units: str
    channels: tuple[str, ...] | None = None


MODALITIES: dict[str, Modality] = {
    "stokes": Modality("stokes.tiff", "float32", "radiance (scene units, W m^-2 sr^-1 nm^-1 scale)"),
    **{f"pol{a}": Modality(f"pol{a}.png", "uint16", "DN = round(radiance * exposure_scale)")
       for a in POLARIZER_ANGLES_DEG},
    "intensity": Modality("intensity.tiff", "float32", "radiance (I_un = S0)"),
    "dolp": Modality("dolp.tiff", "float32", "fraction in [0, 1]"),
    "aolp": Modality("aolp.tiff", "float32",
                     "radians in [-pi/2, pi/2], from image x axis, counter-clockwise on screen"),
    "normals": Modality("normals.tiff", "float32", "unit vector, OpenCV camera frame (x right, y down, z forward)",
                        ("x", "y", "z")),
    "depth": Modality("depth.tiff", "float32", "metres along optical axis; 0 = no hit", ("z",)),
    "object_mask": Modality("object_mask.png", "uint16", "BOP instance index, 0 = background", ("instance",)),
    "anomaly_mask": Modality("anomaly_mask.png", "uint16", "anomaly instance id (meta.anomalies), 0 = none",
                             ("anomaly",)),
    "part_mask": Modality("part_mask.png", "uint16", "part id (meta.parts), 0 = background", ("part",)),
    "raw_mosaic": Modality("raw_mosaic.png", "uint16", "DN of a simulated DoFP sensor (shot + read noise, bit depth)"),
}

# meta.json keys readers depend on -> meaning (every sample has all of them)
META_KEYS = {
    "index": "sample index i (the sample is a pure function of scene config, seed and i)",
    "seed": "run seed",
    "scene": "scene name",
    "config_digest": "digest of the scene configuration",
    "files": "modality name -> {path (relative to the sample directory), dtype, shape, channels, units, ...}",
    "exposure_scale": "DN per radiance unit of the pol*.png images",
    "parts": "part table: part_id (part_mask value), instance, obj_id, part, material, mesh",
    "anomalies": "visible anomaly instances: id (anomaly_mask value), class, kind, bbox, area_px, visible_px, ...",
    "anomaly_events": "the anomalies sampled for this sample (applied unless clean_twin)",
    "anomalies_dropped": "sampled anomalies that were not placed or are not visible, with the reason",
    "clean_twin": "True when the anomalies were sampled but not applied (--clean)",
    "frame": "camera: BOP split/scene_id/im_id, layout (relative to OUT), cam_K, cam_R_w2c, cam_t_w2c_mm, objects",
    "sampled": "every appearance draw (materials, lights, render_seed)",
    "spp": "samples per pixel of the Stokes pass",
    "variant": "Mitsuba variant",
    "timings": "seconds of each render stage",
}


def sample_dir(out: str | Path, index: int) -> Path:
    """Directory of sample ``index`` in run directory ``out``."""
    return Path(out) / SAMPLES_DIR / f"{index:06d}"


def is_complete(path: str | Path) -> bool:
    """A sample directory is complete exactly when its meta.json exists (renamed into place last)."""
    return (Path(path) / META_FILE).is_file()


def entry(name: str, shape, channels=None, **extra) -> dict:
    """The meta.json ``files`` entry of modality ``name`` at ``shape``; ``channels`` where the
    table leaves them to the sensor; ``extra`` keys follow the standard ones."""
    m = MODALITIES[name]
    channels = list(channels) if channels is not None else m.channels
    if channels is None:
        raise ValueError(f"modality {name!r}: channel names depend on the sensor and must be given")
    return {"path": m.file, "dtype": m.dtype, "shape": list(shape), "channels": list(channels), "units": m.units,
            **extra}


# Bytes one sample writes, per pixel, with C colour channels (3 RGB, 1 mono): stokes.tiff
# 16C (float32, uncompressed), pol0..135 8C (uint16 PNGs, stored blocks), intensity/dolp/
# aolp 12C (float32), depth 4, normals <= 12 (zlib, float32 x 3), three uint16 masks <= 6,
# raw_mosaic <= 2C when sensor.dofp is enabled; plus meta.json (<= 64 KiB). Calibrated on a
# real sample (plain scene on the BlenderProc fixture, 640x480 RGB, 1 spp): 34,611,922 bytes
# written = 112.7 B/px, against 130 B/px estimated (the normals compressed to 0.6 B/px).
SAMPLE_META_BYTES = 64 * 2**10


def sample_bytes(width: int, height: int, channels: int, dofp: bool = False) -> int:
    """Upper estimate of the bytes one sample writes at ``width`` x ``height`` (see above)."""
    per_px = 36 * channels + 22 + (2 * channels if dofp else 0)
    return width * height * per_px + SAMPLE_META_BYTES


def load_sample(path: str | Path) -> dict:
    """Read a sample directory back: ``{'meta': dict, <modality>: ndarray}``, images as stored.
    A missing or damaged file raises an error naming it (``io.FileFormatError`` for meta.json,
    OSError for an image)."""
    path = Path(path)
    meta = io.read_json_object(path / META_FILE, what="a sample's meta.json")
    out = {"meta": meta}
    for name, e in meta["files"].items():
        out[name] = io.read_image(path / e["path"])
    return out


def stokes_array(sample: dict) -> np.ndarray:
    """(4, H, W, C) Stokes from a loaded sample (``stokes`` is stored (H, W, 4*C))."""
    st = sample["stokes"]
    c = st.shape[-1] // 4
    return np.moveaxis(st.reshape(*st.shape[:2], 4, c), 2, 0)
