"""The package version (a leaf module: recorded in every meta.json as software.polar_render)."""
__version__ = "0.1.0"
