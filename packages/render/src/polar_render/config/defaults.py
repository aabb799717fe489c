"""Constants shared by the scene schema and the scene loader (leaf module).

``REPO_ROOT``: the repository (``scenes/``, ``assets/``); ``DEFAULTS``: the sections a scene
file may leave out, merged under the file by ``scenes.load_scene`` (metres and degrees, as in
the files); ``MAX_STRENGTH``: the largest ``randomization_strength``.
"""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[5]

DEFAULTS = {
    "lights": {"spot": {"radius_m": [1.0, 1.5], "elevation_deg": [30.0, 80.0],
                        "azimuth_deg": [0.0, 360.0], "intensity": [2.25, 3.375],
                        "cutoff_deg": 20.0, "beam_deg": 15.0}},
    "background": {"ground": {"size_m": 1.0, "color": [0.0, 1.0], "checker_probability": 0.5,
                              "checker_scale": [4.0, 40.0], "alpha": [0.2, 0.6], "z_m": 0.0},
                   "environment": {"radiance": [0.02, 0.3]}},
    "sensor": {"mode": "rgb", "exposure": "auto", "exposure_percentile": 99.5},
    "render": {"spp": 16, "max_depth": 6, "variant": "auto"},
}

MAX_STRENGTH = 10.0
