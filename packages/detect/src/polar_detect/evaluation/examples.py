"""Example figures of the report: which samples are shown and their downsampled arrays.

Up to :data:`N_EXAMPLES_PER_CLASS` anomalous samples per class and the highest-scoring normal
sample are kept, each downsampled so its longer side is at most :data:`EXAMPLE_SIDE` pixels
(areas averaged; bool masks nearest), with the sample's displayable modalities.
"""
from __future__ import annotations

import numpy as np

N_EXAMPLES_PER_CLASS = 2
EXAMPLE_SIDE = 256


def downsample(a, side=EXAMPLE_SIDE):
    import cv2
    h, w = a.shape[:2]
    f = side / max(h, w)
    if f >= 1:
        return a
    size = (max(1, int(round(w * f))), max(1, int(round(h * f))))
    if a.dtype == bool:
        return cv2.resize(a.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    if a.ndim == 3 and a.shape[2] > 4:  # OpenCV resizes at most 4 channels at once (AoLP: cos/sin x RGB)
        return np.stack([cv2.resize(np.ascontiguousarray(a[..., c]), size, interpolation=cv2.INTER_AREA)
                         for c in range(a.shape[2])], axis=-1)
    return cv2.resize(a, size, interpolation=cv2.INTER_AREA)


def collect_example(examples: dict, s, a, m, pos) -> None:
    """Add sample ``s`` (map ``a``, mask ``m``, predicted positives ``pos``) to ``examples``
    ({class: [example]}) if its class still has room (normal: if it scores higher)."""
    if s.label:
        keys = s.e.get("classes") or [i.get("class") for i in s.e.get("instances") or []] or ["anomalous"]
    else:
        keys = ["good"]
    for k in dict.fromkeys(keys):
        lst = examples.setdefault(k, [])
        score = float(a.max())
        if k == "good":
            if lst and lst[0]["max_score"] >= score:
                continue
            lst.clear()
        elif len(lst) >= N_EXAMPLES_PER_CLASS:
            continue
        lst.append({"id": s.id, "class": k, "max_score": score,
                    "map": downsample(a), "mask": downsample(m), "pred": downsample(pos),
                    "modalities": [(n, downsample(x)) for n, x in s.modality_images()]})


def finish_examples(examples: dict) -> list:
    """The kept examples in report order: anomaly classes alphabetically, then ``good``."""
    out = []
    for k in sorted(examples, key=lambda c: (c == "good", c)):
        out.extend(examples[k])
    return out
