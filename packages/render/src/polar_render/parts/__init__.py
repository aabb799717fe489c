"""Procedural part models (millimetres).  See ``polar_render.parts.usb_brick``."""
