"""polar_render: BOP layouts to Mitsuba 3 polarized renders."""
__version__ = "0.1.0"
