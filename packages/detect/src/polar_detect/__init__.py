"""Polarimetric anomaly detectors (DRAEM, Sequential PatchCore). See issues 5-7."""
__version__ = "0.1.0"
