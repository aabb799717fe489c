"""Surface anomalies: a registry of classes, their sampling, geometry edits, masks and the stain.

Modules (read in this order):

==================  ======================================================================
``registry.py``     the protocol of a class (:class:`~.registry.AnomalyClass`: name, family
                    structural/impurity/logical, sampling, geometry edit, mask) and the
                    name -> class table; :class:`~.registry.Anomaly`, one sampled anomaly
``builtin.py``      registers the shipped classes
``geometric.py``    structural: dent, bump, scratch, chip (vertex displacements)
``parts.py``        logical: missing, extra, swapped
``stain.py``        impurity: water_stain (Algorithm 1; its Mitsuba textures are in
                    ``polar_render.mitsuba.plugins``)
``context.py``      what a class samples with (stream, slots, visible surface, regions)
``sampling.py``     the per-sample loop: which classes, then one anomaly of each
``edits.py``        geometry edits on the meshes (hide, show, refine and displace)
``refine.py``       mesh refinement around a surface defect
``aov.py``          exact per-pixel geometry (AOV passes) the masks compare
``masks.py``        pixel-exact instance masks and their table
``visibility.py``   what the clean sample's camera sees (to place anomalies visibly)
==================  ======================================================================

Scene file: ``anomalies.classes.<name>`` with ``weight``, ``parts`` and the class's ranges
(``config/schema.py`` declares each class's keys). Units: millimetres in the part's model
frame.

Adding a class: write one module with a subclass of ``registry.AnomalyClass`` (set
``name``, ``family``, ``mask_rank`` and the flags; implement ``sample`` and ``mask``, plus
``hides``/``shows_extra`` or, for a surface class, ``applies_to``/``displacement``/
``refinement_zone``), and register one instance: one ``register(...)`` line in
``builtin.py`` (or ``registry.register(...)`` from your own code). ``sample_anomalies``,
``geometry_edits`` and ``instance_masks`` then handle it; to name it in a scene file, also
declare its keys in ``config/schema.py``.
"""
