"""The anomaly classes shipped with polar_render, registered once (in mask order).

Adding a class: write its module (a subclass of ``registry.AnomalyClass``) and add one
``register(...)`` line here, or call ``registry.register`` from your own code.
"""
from polar_render.anomalies.geometric import BUMP, CHIP, DENT, SCRATCH
from polar_render.anomalies.parts import EXTRA, MISSING, SWAPPED
from polar_render.anomalies.registry import register
from polar_render.anomalies.stain import WATER_STAIN

for _cls in (MISSING, EXTRA, CHIP, DENT, BUMP, SCRATCH, SWAPPED, WATER_STAIN):
    register(_cls)
