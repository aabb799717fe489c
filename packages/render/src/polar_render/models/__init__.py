"""Procedural part models (millimetres).  See ``polar_render.models.usb_brick``."""
