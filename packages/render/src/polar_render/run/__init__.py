"""A render run, in the order it happens.

``request`` (what is asked: RenderRequest, its validation, RunSummary) -> ``plan`` (everything
checked and read before anything is written) -> ``runner`` (layout, run.json, the sample loop,
retries; ``RunHooks`` for benchmarks) -> ``sample`` (build, render and write one sample) or
``executors`` (the same in worker processes / Ray tasks). ``manifest``: ``run.json``;
``lock``: one writer per output directory. The files of a sample: :mod:`polar_render.outputs`.
"""
