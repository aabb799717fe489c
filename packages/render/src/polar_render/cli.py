"""Command line: ``polar-render render|new-scene`` (the Makefile's ``make render`` and ``make scene`` call this).

``render`` renders N samples of a scene; ``new-scene NAME --mesh part.stl`` writes a scene file for
your own part (``polar_render.config.scaffold``). Mesh warnings (``polar_render.parts.meshes.MeshWarning``) are
printed as ``warning: <scene file>: <key>: <problem>``.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path


def scene_label(scene: str) -> str:
    """The name a scene argument goes by in default output folders: the scene's folder for
    ``.../NAME/scene.yaml`` or a folder, the file's stem for another YAML file, else the
    argument itself (a scene name under scenes/). ``make`` derives OUT the same way."""
    p = Path(str(scene).rstrip("/"))
    if p.suffix in (".yaml", ".yml"):
        return p.parent.name if p.stem == "scene" and p.parent.name else p.stem
    return p.name or str(scene)


def _render(args) -> int:
    from polar_render.run.request import RenderRequest, parse_res, parse_shard
    from polar_render.run.runner import run

    out = args.out if args.out is not None else f"out/{scene_label(args.scene)}"
    req = RenderRequest(scene=args.scene, out=out,
                        n=args.n, seed=args.seed, spp=args.spp, res=parse_res(args.res),
                        layout=Path(args.layout) if args.layout is not None else None, variant=args.variant,
                        progress=not args.quiet, clean=args.clean, light_variant=args.light_variant,
                        workers=args.workers, shard=parse_shard(args.shard), executor=args.executor,
                        layout_backend=args.layout_backend, blender=args.blender, denoise=args.denoise,
                        noise_seed=args.noise_seed)
    summary = run(req)
    print(summary.line())
    for i, why in sorted(summary.failed.items()):
        print(f"  sample {i}: {why}", file=sys.stderr)
    return 1 if summary.failed else 0


def _new_scene(args) -> int:
    from polar_render.config.scaffold import new_scene

    words = [args.name, *(f"--mesh {Path(m).name}" for m in args.mesh), *(f"--unit {u}" for u in args.unit or []),
             *(f"--material {m}" for m in args.material or []), f"--mode {args.mode}"]
    path = new_scene(args.name, args.mesh, args.unit, args.material, args.mode, args.force,
                     command="polar-render new-scene " + " ".join(words))
    print(f"wrote {path}\nnext: make render SCENE={args.name}   (or: python -m polar_render.cli render --scene {path})")
    return 0


def _show_mesh_warnings() -> None:
    """Print mesh warnings as one line ``warning: ...`` each (other warnings as usual)."""
    from polar_render.parts.meshes import MeshWarning

    shown = warnings.showwarning
    if getattr(shown, "_polar_mesh", False):
        return

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, MeshWarning):
            print(f"warning: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    show._polar_mesh = True
    warnings.showwarning = show


def _add_render(sub) -> None:
    r = sub.add_parser("render", help="render N samples of a scene (sampling a layout unless --layout is given)")
    r.add_argument("--scene", default="usb_brick", help="scene name under scenes/ or path to a scene.yaml")
    r.add_argument("--n", type=int, default=None, help="number of samples N >= 1 (default 8; all frames with --layout)")
    r.add_argument("--seed", type=int, default=0, help="run seed >= 0 (every draw of sample i comes from (seed, i))")
    r.add_argument("--out", default=None, help="output directory (default out/<scene name>: NAME for scenes/NAME or "
                                               ".../NAME/scene.yaml, the stem of another .yaml)")
    r.add_argument("--spp", type=int, default=None,
                   help="samples per pixel of the Stokes pass, >= 1 (default: the scene's render.spp)")
    r.add_argument("--res", default=None, help="WIDTHxHEIGHT, e.g. 640x480")
    r.add_argument("--layout", default=None, help="existing BOP dataset directory to render")
    r.add_argument("--layout-backend", default="embedded", choices=["embedded", "blenderproc"],
                   help="who samples a new layout: the embedded pybullet sampler, or BlenderProc 2.8 "
                        "(in-process with the blenderproc extra, or `blenderproc run` with --blender)")
    r.add_argument("--blender", default=None,
                   help="Blender 4.2 install for `blenderproc run` (default: $BLENDER; unset = in-process bpy)")
    r.add_argument("--variant", default=None,
                   help="Mitsuba variant (default: auto; cuda > llvm > scalar, mono_polarized for a mono sensor)")
    r.add_argument("--denoise", default=None, choices=["none", "oidn"],
                   help="denoise the four polarizer images with OIDN, then recompute Stokes "
                        "(default: the scene's render.denoise, else none)")
    r.add_argument("--noise-seed", type=int, default=None,
                   help="independent Monte Carlo stream K >= 0: the same samples (every draw, mask and exact "
                        "pass identical) with other render noise, into another --out (noise measurements)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument("--workers", type=int, default=1, help="local worker processes >= 1 (one Mitsuba context each)")
    r.add_argument("--executor", default="local", choices=["local", "ray"],
                   help="local worker processes, or Ray tasks (RAY_ADDRESS, else a local Ray instance)")
    r.add_argument("--shard", default=None, help="k/n: render only samples i with i %% n == k (Slurm arrays)")
    r.add_argument("--clean", action="store_true",
                   help="clean twins: the same samples (same seed) with their anomalies not applied; use another --out")
    r.add_argument("--light-variant", default=None, choices=["none", "rot90", "scale2"],
                   help="override the scene's lights.ring.variant (ring-lit scenes only)")
    r.set_defaults(func=_render)


def _add_new_scene(sub) -> None:
    ns = sub.add_parser("new-scene", help="write scenes/NAME/scene.yaml for your own part from its mesh file(s)",
                        description="Write scenes/NAME/scene.yaml (and copy the meshes beside it): framing and "
                                    "anomaly sizes computed from the part's size, every key with a comment. "
                                    "Then: make render SCENE=NAME.")
    ns.add_argument("name", metavar="NAME", help="scene name (letters, digits, '_', '-')")
    ns.add_argument("--mesh", action="append", required=True,
                    help="mesh file (PLY, STL, OBJ, glTF/GLB, STEP); repeat for several parts of one object")
    ns.add_argument("--unit", action="append", choices=["mm", "cm", "m", "in"],
                    help="length unit of the mesh files (default mm; glTF/GLB m; STEP: its own): once for all, "
                         "or once per --mesh")
    ns.add_argument("--material", action="append", default=None,
                    help="material preset: plastic (default), glossy_plastic, rough_plastic, aluminium, chrome, "
                         "copper, diffuse; once for all, or once per --mesh")
    ns.add_argument("--mode", default="station", choices=["station", "drop", "topdown"],
                    help="layout: station (fixed top and side views, ring light; default), drop (Polar-Ano "
                         "domain randomization) or topdown (camera straight above)")
    ns.add_argument("--force", action="store_true", help="rewrite an existing scene's scene.yaml and meshes")
    ns.set_defaults(func=_new_scene)


def parser() -> argparse.ArgumentParser:
    """The ``polar-render`` argument parser (subcommands render and new-scene)."""
    ap = argparse.ArgumentParser(prog="polar-render", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    _add_render(sub)
    _add_new_scene(sub)
    return ap


def main(argv=None) -> int:
    ap = parser()
    try:
        args = ap.parse_args(argv)
    except SystemExit as exc:   # argparse has printed the usage error (exit 2) or --help (exit 0)
        return int(exc.code or 0)
    _show_mesh_warnings()
    from polar_render.layout.blenderproc.compat import BlenderProcUnavailable
    from polar_render.io import NoSpaceError
    from polar_render.layout.blenderproc.backend import LayoutBackendError
    from polar_render.run.request import RunAborted
    from polar_render.mitsuba.variants import VariantError

    # Bad input (exit 2): every check runs before anything is written. A full disk before
    # the first sample is written is reported the same way; one that stops a run part-way,
    # after finished samples were kept, exits 1 like failed samples do.
    try:
        return args.func(args)
    except (RunAborted, LayoutBackendError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, BlenderProcUnavailable, VariantError, NoSpaceError, FileNotFoundError,
            PermissionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
