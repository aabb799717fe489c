"""Source folders for the import tests (MVTec AD, MVTec LOCO AD): image writing."""
from __future__ import annotations

from pathlib import Path

import cv2


def _write(path: Path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), arr)
