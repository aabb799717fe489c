"""Choosing and activating a Mitsuba 3 polarized variant.

Order of preference (``variant="auto"``): ``cuda_ad_<kind>_polarized`` when an NVIDIA
GPU is visible, else ``llvm_ad_<kind>_polarized`` when a usable libLLVM (>= 17; we look
for Debian's ``libllvm19``) is found, else ``scalar_<kind>_polarized`` (about 6x slower).
``<kind>`` is ``mono`` for a monochrome sensor (``sensor.mode: mono``; most industrial
polarization cameras, e.g. Sony IMX250MZR, are monochrome) and ``spectral`` for RGB.
Mitsuba 3.9 wheels ship no ``rgb_polarized`` variant; the spectral variants convert to
RGB in the film. The mono variants trace one luminance channel: rgb textures hold their
Rec. 709 luminance, and no spectral-to-RGB conversion happens (faster at equal spp:
``python -m polar_render.bench.quality --mono`` measures it). ``POLAR_RENDER_VARIANT``
or an explicit ``variant=`` overrides the choice; asking for a variant that cannot run
raises. An RGB sensor cannot use a mono variant (``pipeline`` refuses it).
"""
from __future__ import annotations

import glob
import os
import shutil

import numpy as np

SPECTRAL = "spectral_polarized"
MONO = "mono_polarized"
_LLVM_GLOBS = (
    "/usr/lib/x86_64-linux-gnu/libLLVM-19.so*",
    "/usr/lib/llvm-19/lib/libLLVM*.so*",
    "/usr/lib/aarch64-linux-gnu/libLLVM-19.so*",
    "/usr/lib/x86_64-linux-gnu/libLLVM-18.so*",
    "/usr/lib/x86_64-linux-gnu/libLLVM-17.so*",
)


class VariantError(RuntimeError):
    """A requested Mitsuba variant cannot run on this machine."""


def find_libllvm() -> str | None:
    """Path of a libLLVM usable by Dr.Jit (LLVM 15/16 abort with 'Cannot select fmaximum')."""
    env = os.environ.get("DRJIT_LIBLLVM_PATH")
    if env and os.path.exists(env):
        return env
    for pattern in _LLVM_GLOBS:
        hits = sorted(glob.glob(pattern), key=len)
        if hits:
            return hits[0]
    return None


def cuda_visible() -> bool:
    """True when an NVIDIA driver and a device are visible (nvidia-smi or /dev/nvidia0)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return os.path.exists("/dev/nvidia0") or shutil.which("nvidia-smi") is not None


def choose_variant(requested: str | None = "auto", *, cuda: bool | None = None,
                   libllvm: str | None | bool = True, mono: bool = False) -> str:
    """Pure selection logic (no Mitsuba import), testable on any machine.

    ``cuda``/``libllvm`` default to probing this machine; pass them to test the rules.
    ``mono``: the sensor is monochrome, so ``auto`` picks a ``*_mono_polarized`` variant.
    """
    requested = os.environ.get("POLAR_RENDER_VARIANT") or requested or "auto"
    if requested != "auto":
        return requested
    if cuda is None:
        cuda = cuda_visible()
    if libllvm is True:
        libllvm = find_libllvm()
    kind = MONO if mono else SPECTRAL
    if cuda:
        return f"cuda_ad_{kind}"
    if libllvm:
        return f"llvm_ad_{kind}"
    return f"scalar_{kind}"


def activate(requested: str | None = "auto", mono: bool = False):
    """Select a variant (``mono``: for a monochrome sensor), set ``DRJIT_LIBLLVM_PATH`` if
    needed, and return the ``mitsuba`` module."""
    variant = choose_variant(requested, mono=mono)
    if variant.startswith("llvm"):
        lib = find_libllvm()
        if lib is None:
            raise VariantError(
                f"variant {variant!r} needs libLLVM >= 17; install Debian's libllvm19 "
                "(apt-get install libllvm19) or set DRJIT_LIBLLVM_PATH")
        os.environ.setdefault("DRJIT_LIBLLVM_PATH", lib)
    if "polarized" not in variant:
        raise VariantError(f"variant {variant!r} is not polarized; Stokes output needs a *_polarized variant")
    import mitsuba as mi

    if variant not in mi.variants():
        raise VariantError(f"Mitsuba has no variant {variant!r}; available: {', '.join(mi.variants())}")
    try:
        mi.set_variant(variant)
    except (ImportError, RuntimeError) as exc:  # e.g. CUDA driver missing, LLVM init failed
        raise VariantError(f"cannot activate Mitsuba variant {variant!r}: {exc}") from exc
    return mi


def float_array(mi, values) -> object:
    """A flat float32 Dr.Jit array of the active variant (vertex positions, normals, UVs,
    attributes): ``mi.Float`` on JIT variants, ``drjit.scalar.ArrayXf`` on scalar ones (where
    ``mi.Float`` is a Python float)."""
    import drjit as dr

    flat = np.ascontiguousarray(values, np.float32).ravel()
    return mi.Float(flat) if dr.is_jit_v(mi.Float) else dr.scalar.ArrayXf(flat)


def uint_array(mi, values) -> object:
    """A flat uint32 Dr.Jit array of the active variant (mesh faces); see :func:`float_array`."""
    import drjit as dr

    flat = np.ascontiguousarray(values, np.uint32).ravel()
    return mi.UInt32(flat) if dr.is_jit_v(mi.Float) else dr.scalar.ArrayXu(flat)
