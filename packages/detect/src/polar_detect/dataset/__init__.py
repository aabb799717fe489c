"""Datasets for the detectors (issue 4): build from renders, MVTec AD export/import,
MVTec LOCO import, real polarization captures. Layout and manifest: packages/detect/README.md
section 2; encodings: :mod:`polar_detect.dataset.encodings`.

CLI: ``python -m polar_detect.dataset build|verify|export-mvtec|import-mvtec|import-loco|import-polar``.
"""
from polar_detect.dataset.encodings import MODALITIES, DatasetError  # noqa: F401
from polar_detect.dataset.manifest import read_manifest, verify  # noqa: F401
