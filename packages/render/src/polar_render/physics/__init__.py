"""Polarization physics on images: Stokes algebra and the DoFP sensor (the only DoFP code)."""
