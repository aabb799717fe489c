"""``python -m polar_render.bench``: the render benchmark (:mod:`polar_render.bench.render`), same options."""
import sys

from polar_render.bench.render import main

sys.exit(main())
