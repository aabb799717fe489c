"""Detectors: DRAEM, (Sequential) PatchCore, SimpleNet, the feature ensemble, SfP normals, baselines."""
