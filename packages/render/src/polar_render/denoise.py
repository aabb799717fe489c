"""Denoising the Stokes pass through its polarizer images (``render.denoise: oidn``).

Intel Open Image Denoise (``pyoidn``, OIDN 2.5 with its trained weights bundled) denoises
non-negative radiance; it clamps its input at 0, so it never sees the signed S1, S2, S3.
Instead (``denoise_stokes``):

1. the rendered Stokes vectors are projected onto the physical cone
   (``polarization.project_to_cone``), so the four polarizer images
   I_t = 0.5 (S0 + S1 cos 2t + S2 sin 2t), t = 0, 45, 90, 135 deg, are >= 0;
2. each of I0, I45, I90, I135 is denoised by OIDN's ``RT`` filter (HDR, quality ``fast``),
   guided by the albedo and normals of a separate guide pass on the same pixel footprint
   (``MitsubaScene.render_guides``: ``GUIDE_SPP`` rays per pixel, box filter; the guides
   are treated as clean, ``cleanAux``). Mono sensors: Y is copied into the three colour
   channels and the albedo is its Rec. 709 luminance; the output is the mean of the three;
3. S0 = (I0 + I45 + I90 + I135) / 2, S1 = I0 - I90, S2 = I45 - I135 are recomputed and
   projected onto the linear cone S0 >= |(S1, S2)| (four independently denoised images
   need not be consistent), so DoLP, AoLP and the polarizer images written from them obey
   I0 + I90 = I45 + I135 = S0 exactly;
4. S3 (circular polarization) is not observable through linear polarizers and is signed,
   so it is not denoised: it keeps the rendered degree of circular polarization,
   S3 = (S3 / S0)_rendered * S0_denoised (0 where the rendered S0 is 0), clipped to
   |S3| <= sqrt(S0^2 - S1^2 - S2^2) so the vector stays in the cone.

Denoising the signed Stokes components directly is worse (issue 14 reports, for a synthetic
test, AoLP error 16 -> 36 deg, against 16 -> 0.9 deg through the polarizer images).
Alternatives measured on 8 usb_brick_station samples (640x480, mono, 18 stains and dents,
error against 1024 spp on the part; 2-core CPU), none adopted:

* three polarizer images instead of four (I0, I45, I90; I135 = S0 - I45): one OIDN call
  (0.10 s at 640x480, quality fast) less, the same DoLP RMSE, but AoLP error +12-16 %
  (16 spp: 2.22 vs 1.94 deg), since S2 = 2 I45 - I0 - I90 is noisier than S1;
* three at 0/60/120 deg: AoLP as with four, DoLP contrast kept 1.5-4.5 points lower;
* a mono sensor's polarizer images packed into OIDN's three colour channels (two calls
  instead of four; measured on 4 of the samples): DoLP RMSE +37 % and AoLP error x3 at
  16 spp (OIDN mixes the channels);
* OIDN quality high: 4x the denoiser time for 4-5 % lower DoLP RMSE;
* the polarizer images normalised by the raw S0 (I_t / S0, five calls with S0), times the
  denoised S0: DoLP contrast as raw (-0.9 % at 64 spp) but DoLP RMSE +8 % at 64 spp and
  +28 % at 16 spp, so raw reaches the same error sooner (time ratio about 0.29 at 64 spp).

Device: OIDN's CUDA device when an NVIDIA GPU is visible and pyoidn's CUDA backend loads
(device buffers, ``_oidn_cuda``; not exercised on the CPU-only test machines), else its CPU
device (TBB threads, ``pyoidn.denoise``). The CPU device gives bit-identical
output for identical input (tested), so sample i stays a pure function of (scene, seed, i).
"""
from __future__ import annotations

import numpy as np

from polar_render.physics.polarization import LUMA, POLARIZER_ANGLES_DEG, polarizer_images, project_to_cone

METHODS = ("none", "oidn")
GUIDE_SPP = 4            # rays per pixel of the guide pass (albedo + normal, box filter)
QUALITY = "fast"         # OIDN filter quality: "high" | "balanced" | "fast" (bench.quality: fast is
                         # as accurate here and keeps the most DoLP contrast, at 1/3 of the time of high)
CLEAN_AUX = True         # guides are noise-free per pixel (first-hit values, box-filtered): cleanAux


class DenoiseError(RuntimeError):
    """The denoiser is unavailable or failed."""


def oidn_device() -> str:
    """``cuda`` when an NVIDIA GPU is visible and OIDN's CUDA backend supports it, else ``cpu``."""
    from polar_render.mitsuba.variants import cuda_visible

    if not cuda_visible():
        return "cpu"
    try:
        return "cuda" if _pyoidn().Device.is_cuda_available(0) else "cpu"
    except Exception:  # noqa: BLE001 - a broken CUDA backend means the CPU device
        return "cpu"


def _pyoidn():
    try:
        import pyoidn
    except ImportError as exc:  # pragma: no cover - pyoidn is a dependency
        raise DenoiseError("render.denoise: oidn needs pyoidn (pip install pyoidn)") from exc
    return pyoidn


def oidn_rgb(color: np.ndarray, albedo: np.ndarray, normal: np.ndarray, device: str = "cpu") -> np.ndarray:
    """OIDN ``RT`` filter on one (H, W, 3) float32 HDR image >= 0 with (H, W, 3) guides:
    albedo in [0, 1], normals in [-1, 1] (any fixed frame). Returns (H, W, 3) float32 >= 0."""
    pyoidn = _pyoidn()
    args = [np.ascontiguousarray(a, dtype=np.float32) for a in (color, albedo, normal)]
    if device == "cuda":
        return _oidn_cuda(*args)
    return pyoidn.denoise(*args, hdr=True, clean_aux=CLEAN_AUX, quality=QUALITY)


_CUDA: dict = {}   # the process's committed OIDN CUDA device


def _oidn_cuda(color: np.ndarray, albedo: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """``oidn_rgb`` on OIDN's CUDA device: host arrays copied to device buffers and back."""
    pyoidn = _pyoidn()
    if "device" not in _CUDA:
        dev = pyoidn.Device(pyoidn.OIDN_DEVICE_TYPE_CUDA)
        dev.commit()
        err = dev.get_error()   # reading the error clears it
        if err:
            raise DenoiseError(f"OIDN CUDA device: {err}")
        _CUDA["device"] = dev
    dev, (h, w, _), nbytes = _CUDA["device"], color.shape, color.nbytes
    flt, bufs = pyoidn.Filter(dev, pyoidn.OIDN_FILTER_TYPE_RT), {}
    try:
        for name, arr in (("color", color), ("albedo", albedo), ("normal", normal), ("output", None)):
            bufs[name] = pyoidn.Buffer(dev, nbytes)
            if arr is not None:
                bufs[name].write(0, nbytes, arr)
            flt.set_image(name, bufs[name], pyoidn.OIDN_FORMAT_FLOAT3, w, h)
        flt.set_bool("hdr", True)
        flt.set_bool("cleanAux", CLEAN_AUX)
        flt.set_quality({"high": pyoidn.OIDN_QUALITY_HIGH, "balanced": pyoidn.OIDN_QUALITY_BALANCED,
                         "fast": pyoidn.OIDN_QUALITY_FAST}[QUALITY])
        flt.commit()
        flt.execute()
        err = dev.get_error()   # reading the error clears it
        if err:
            raise DenoiseError(f"OIDN CUDA filter: {err}")
        out = np.empty_like(color)
        bufs["output"].read(0, nbytes, out)
        return out
    finally:
        flt.release()
        for b in bufs.values():
            b.release()


def guides_for(guides: np.ndarray, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 6) guide pass -> OIDN albedo (clipped to [0, 1]; luminance for mono) and normal."""
    albedo = np.clip(guides[..., 0:3], 0.0, 1.0)
    if channels == 1:
        albedo = np.repeat((albedo @ LUMA)[..., None], 3, axis=-1)
    normal = np.clip(guides[..., 3:6], -1.0, 1.0)
    return albedo, normal


def denoise_stokes(stokes: np.ndarray, guides: np.ndarray, device: str = "cpu") -> tuple[np.ndarray, int]:
    """Denoise (4, H, W, C) Stokes (C = 3 RGB or 1 mono, radiance) through its polarizer
    images (module docstring). ``guides``: (H, W, 6) from ``render_guides``. Returns the
    denoised (4, H, W, C) float32 Stokes, inside the cone, and the number of Stokes vectors
    (pixel x channel) that the final linear-cone projection changed."""
    st, _ = project_to_cone(stokes)
    c = st.shape[-1]
    albedo, normal = guides_for(guides, c)
    imgs = {}
    for angle, img in polarizer_images(st).items():
        col = np.repeat(img, 3, axis=-1) if c == 1 else img
        out = oidn_rgb(np.maximum(col, 0.0), albedo, normal, device)
        imgs[angle] = out.mean(axis=-1, keepdims=True) if c == 1 else out
    i0, i45, i90, i135 = (imgs[a].astype(np.float32) for a in POLARIZER_ANGLES_DEG)
    lin = np.stack([0.5 * (i0 + i45 + i90 + i135), i0 - i90, i45 - i135])
    lin, changed = project_to_cone(lin)
    docp = np.divide(st[3], st[0], out=np.zeros_like(st[0]), where=st[0] > 0)
    room = np.sqrt(np.maximum(lin[0].astype(np.float64) ** 2 - lin[1] ** 2 - lin[2] ** 2, 0.0))
    s3 = np.clip(docp * lin[0], -room, room)
    return np.concatenate([lin, s3[None]]).astype(np.float32), int(changed.sum())
