"""AUPRO against a brute-force implementation written here (explicit threshold sweep,
explicit per-region overlaps with OpenCV connected components, trapezoid up to the limit)."""
import cv2
import numpy as np
import pytest

from polar_detect.metrics import AUPRO, aupro


def trapezoid_to_limit(fpr, y, limit):
    order = np.lexsort((y, fpr))
    fpr, y = np.asarray(fpr)[order], np.asarray(y)[order]
    xs, ys = [0.0], [0.0]
    for x1, y1 in zip(fpr, y):
        if x1 <= limit:
            xs.append(x1)
            ys.append(y1)
        else:
            x0, y0 = xs[-1], ys[-1]
            xs.append(limit)
            ys.append(y0 + (y1 - y0) * (limit - x0) / (x1 - x0))
            break
    area = sum((xs[i + 1] - xs[i]) * (ys[i + 1] + ys[i]) / 2 for i in range(len(xs) - 1))
    return area / limit


def brute_aupro(maps, masks, limit=0.3, connectivity=8):
    regions = []
    for i, m in enumerate(masks):
        n, lab = cv2.connectedComponents(m.astype(np.uint8), connectivity=connectivity)
        regions += [(i, lab == k) for k in range(1, n)]
    neg = [~m.astype(bool) for m in masks]
    n_neg = sum(int(x.sum()) for x in neg)
    thresholds = np.unique(np.concatenate([m.ravel() for m in maps]))[::-1]
    fprs, pros = [], []
    for t in thresholds:
        pred = [m >= t for m in maps]
        pros.append(np.mean([(pred[i] & r).sum() / r.sum() for i, r in regions]))
        fprs.append(sum(int((p & n).sum()) for p, n in zip(pred, neg)) / n_neg)
    return trapezoid_to_limit(fprs, pros, limit)


def random_case(seed, n=3, size=24):
    rng = np.random.default_rng(seed)
    maps, masks = [], []
    for _ in range(n):
        m = np.zeros((size, size), np.uint8)
        for _ in range(rng.integers(0, 4)):
            x, y = rng.integers(0, size - 4, 2)
            w, h = rng.integers(1, 7, 2)
            m[y:y + h, x:x + w] = 1
        s = rng.random((size, size)) + 0.6 * m
        if seed % 2:
            s = np.round(s, 1)  # ties
        maps.append(s.astype(np.float32))
        masks.append(m)
    masks[0][2:5, 2:5] = 1  # at least one region
    return maps, masks


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("limit", [0.3, 0.05, 1.0])
def test_aupro_matches_brute_force(seed, limit):
    maps, masks = random_case(seed)
    assert aupro(np.stack(maps), np.stack(masks), fpr_limit=limit) == pytest.approx(
        brute_aupro(maps, masks, limit), abs=1e-9)


def test_connectivity_4_matches_brute_force():
    maps, masks = random_case(11)
    masks[1][10, 10] = masks[1][11, 11] = 1  # diagonal neighbours
    assert aupro(np.stack(maps), np.stack(masks), connectivity=4) == pytest.approx(
        brute_aupro(maps, masks, 0.3, connectivity=4), abs=1e-9)


def test_known_answer_regions_weigh_equally():
    # region A: 1 pixel, scored high; region B: 3 pixels, scored low; background in between.
    s = np.full((6, 6), 0.5)
    m = np.zeros((6, 6), bool)
    m[0, 0] = True
    s[0, 0] = 0.9
    m[4, 3:6] = True
    s[4, 3:6] = 0.1
    # curve: (0,0) -> (0, 0.5) [A found] -> (1, 0.5) -> (1, 1): area 0.5 for any limit
    assert aupro(s, m, fpr_limit=0.3) == pytest.approx(0.5)
    assert aupro(s, m, fpr_limit=1.0) == pytest.approx(0.5)
    # a pixel-level TPR would give 0.25 here; a perfect map gives 1
    assert aupro(m.astype(float), m) == pytest.approx(1.0)


def test_known_answer_interpolation_at_limit():
    # one region fully above every background pixel except one of four; fpr steps 0 -> 0.25 -> ...
    s = np.array([[0.9, 0.8, 0.1, 0.1, 0.1]])
    m = np.array([[False, True, False, False, False]])
    # thresholds: 0.9 -> fpr .25, pro 0; 0.8 -> fpr .25, pro 1; 0.1 -> (1, 1)
    # area to 0.3: 0.05 * 1 = 0.05 -> normalised 1/6
    assert aupro(s, m, fpr_limit=0.3) == pytest.approx(0.05 / 0.3)


def test_stateful_updates_and_histogram_bound():
    maps, masks = random_case(4, n=6, size=40)
    exact = aupro(np.stack(maps), np.stack(masks))
    m = AUPRO(mode="exact")
    for a, b in zip(maps, masks):
        m.update(a, b)
    assert m.compute()["value"] == pytest.approx(exact, abs=1e-12)
    lo = min(float(a.min()) for a in maps)
    hi = max(float(a.max()) for a in maps)
    for bins in (8, 64, 4096):
        h = AUPRO(mode="hist", bins=bins, value_range=(lo, hi))
        for a, b in zip(maps, masks):
            h.update(a, b)
        r = h.compute()
        assert abs(r["value"] - exact) <= r["error_bound"] + 1e-12


def test_default_connectivity_is_8():
    s = np.full((5, 5), 0.5)
    m = np.zeros((5, 5), bool)
    m[0, 0:2] = True
    s[0, 0:2] = 0.9          # a horizontal pair, found first
    m[1, 2] = True
    s[1, 2] = 0.1            # touches the pair only diagonally
    assert aupro(s, m) == pytest.approx(2 / 3)                 # one 3-pixel region, 2/3 covered
    assert aupro(s, m, connectivity=4) == pytest.approx(0.5)   # two regions: 1 and 0
    assert aupro(s, m) == pytest.approx(brute_aupro([s], [m]))
