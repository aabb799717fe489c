"""Render benchmarks (``make bench``); not imported by the product.

``python -m polar_render.bench`` (= ``python -m polar_render.bench.render``): layout, end-to-end
run and raw render side by side; ``bench.quality``: image quality per second of rendering;
``bench.anomalies``: the anomaly path; ``bench.batch``: workers, Ray and memory;
``bench.measure``: noise and learnability of rendered datasets. They observe the runner
through :class:`polar_render.run.runner.RunHooks`, never by patching it.
"""
