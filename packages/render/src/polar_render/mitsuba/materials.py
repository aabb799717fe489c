"""Mitsuba BSDFs for the material types a scene file may use.

Each type has a constructor (a Mitsuba dict, built once per scene structure) and a setter
that writes one sample's values through ``mi.traverse`` (no scene reload, no recompile):

* ``pplastic``: Mitsuba's polarized plastic (Baek et al. 2018): GGX specular lobe with
  dielectric Fresnel (interior IOR ``ior``), polarizing diffuse base ``color`` (linear RGB).
* ``roughconductor``: GGX conductor with measured complex IOR (``conductor``, e.g. Al, Cr).
* ``brushed_conductor``: anisotropic GGX conductor (brushed metal). ``alpha_u`` is the
  roughness along the shading tangent ``s``, ``alpha_v`` along ``t = n x s``. Mitsuba
  takes ``s`` from the mesh's ``dp/du`` (UV parametrisation; without UVs it is an arbitrary
  ``coordinate_system(n)`` frame, so such meshes need UVs with ``u`` along the brushing
  direction, see ``parts/aluminum_plate.py``). Brushing grooves run along ``s``: the surface
  is smooth along them and rough across, so ``alpha_u < alpha_v`` and highlights stretch
  across the grooves. With a water stain both ``alpha_u`` and ``alpha_v`` are wrapped by a
  stain roughness texture (``roughness_scale`` inside r'), like ``alpha`` elsewhere.
* ``diffuse``: Lambertian (depolarizes).
``alpha`` is the GGX roughness (Mitsuba's convention: alpha = roughness^2 of other tools is
NOT applied; the scene file value is passed through).
"""
from __future__ import annotations

from collections.abc import MutableMapping


def bsdf_dict(material: dict, stain=None) -> dict:
    """Mitsuba dict for a sampled material (see ``randomize.sample_material``).

    ``stain``: (reflectance texture, roughness texture) objects from ``mitsuba/plugins.py``; they
    wrap the reflectance (diffuse for pplastic, specular tint for conductors) and alpha.
    ``brushed_conductor`` takes a third texture: (reflectance, alpha_u, alpha_v).
    """
    t = material["type"]
    if t == "pplastic":
        d = {"type": "pplastic", "diffuse_reflectance": {"type": "rgb", "value": material["color"]},
             "alpha": float(material["alpha"]), "int_ior": float(material["ior"])}
        if stain is not None:
            d["diffuse_reflectance"], d["alpha"] = stain
        return d
    if t == "roughconductor":
        d = {"type": "roughconductor", "material": material["conductor"],
             "distribution": "ggx", "alpha": float(material["alpha"])}
        if stain is not None:
            d["specular_reflectance"], d["alpha"] = stain
        return d
    if t == "brushed_conductor":
        d = {"type": "roughconductor", "material": material["conductor"], "distribution": "ggx",
             "alpha_u": float(material["alpha_u"]), "alpha_v": float(material["alpha_v"])}
        if stain is not None:
            d["specular_reflectance"], d["alpha_u"], d["alpha_v"] = stain
        return d
    if t == "diffuse":
        return {"type": "diffuse", "reflectance": {"type": "rgb", "value": material["color"]}}
    raise ValueError(f"unknown material type {t!r}")


EXT_IOR = 1.000277  # Mitsuba's default exterior medium (air)


def structure_key(material: dict) -> tuple:
    """What cannot change through ``mi.traverse`` (a change forces a rebuild)."""
    return (material["type"], material.get("conductor"))


def set_bsdf(params: MutableMapping, prefix: str, material: dict, encode_rgb, scalar, stain=None) -> None:
    """Write ``material``'s values into the traversed parameters of the BSDF at ``prefix``.

    ``encode_rgb`` turns linear RGB into what an ``rgb`` texture stores in the active
    variant (spectral variants store spectral-upsampling coefficients, not RGB);
    ``scalar`` wraps a float. Both must return opaque Dr.Jit values (see ``scene.py``).
    """
    t = material["type"]
    if stain is not None and t == "brushed_conductor":
        refl, rough_u, rough_v = stain
        rough_u.value = scalar(material["alpha_u"])
        rough_v.value = scalar(material["alpha_v"])
        params[f"{prefix}.specular_reflectance.base.value"] = encode_rgb([1.0, 1.0, 1.0])
        return
    if stain is not None:  # the stain textures hold the base values
        refl, rough = stain
        rough.value = scalar(material["alpha"])
        if t == "pplastic":
            params[f"{prefix}.diffuse_reflectance.base.value"] = encode_rgb(material["color"])
            params[f"{prefix}.eta.value"] = scalar(float(material["ior"]) / EXT_IOR)
        elif t == "roughconductor":
            params[f"{prefix}.specular_reflectance.base.value"] = encode_rgb([1.0, 1.0, 1.0])
        return
    if t == "pplastic":
        params[f"{prefix}.diffuse_reflectance.value"] = encode_rgb(material["color"])
        params[f"{prefix}.alpha.value"] = scalar(material["alpha"])
        params[f"{prefix}.eta.value"] = scalar(float(material["ior"]) / EXT_IOR)
    elif t == "roughconductor":
        params[f"{prefix}.alpha.value"] = scalar(material["alpha"])
    elif t == "brushed_conductor":
        params[f"{prefix}.alpha_u.value"] = scalar(material["alpha_u"])
        params[f"{prefix}.alpha_v.value"] = scalar(material["alpha_v"])
    elif t == "diffuse":
        params[f"{prefix}.reflectance.value"] = encode_rgb(material["color"])
