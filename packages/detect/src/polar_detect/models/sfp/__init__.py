"""Learned normal prior: a shape-from-polarization (SfP) network trained on our renders.

Polar-Ano's fourth input n is the normal predicted from polarization by an SfP network,
not the true normal (which a real camera never has). This subpackage trains such a
network on rendered datasets and evaluates it against a physics-only baseline:

* :mod:`.model`    the network (compact U-Net, unit-normal output, ONNX-exportable);
* :mod:`.data`     dataset reading, flips and DoFP sensor noise (``polar_render.physics.dofp``);
* :mod:`.train`    training with exact, digest-guarded resume; presets cpu / gpu / tiny;
* :mod:`.physics`  physics baseline (Fresnel DoLP inversion, AoLP azimuth, ambiguities);
* :mod:`.evaluate` angular-error metrics on held-out data, exact and DoFP inputs;
* :mod:`.predict`  a dataset copy with a ``normals_learned`` modality for the detectors;
* :mod:`.export`   ONNX export; :mod:`.store` safetensors + JSON files; :mod:`.toy` analytic toy set.

CLI: ``python -m polar_detect.models.sfp train|predict|evaluate|export`` (see ``__main__``);
README.md next to this file has the measured results.
"""
