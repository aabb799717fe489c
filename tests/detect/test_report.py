"""End to end: a hand-made dataset + predictions following packages/detect/README.md
(sections 2 and 4) -> polar_detect.evaluate -> metrics.json + report.html with every section."""
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from sklearn.metrics import roc_auc_score

from polar_detect import evaluate as ev
from polar_detect.metrics import aupro, auspro
from polar_detect.report import SECTIONS

H, W = 32, 40
CLASSES = {"dent": "defect", "scratch": "defect", "water_stain": "impurity"}
LOCO_CONFIG = {"dent": {"saturation_threshold": 20.0, "relative_saturation": False},
               "scratch": {"saturation_threshold": 0.5, "relative_saturation": True},
               "water_stain": {"saturation_threshold": 1.0, "relative_saturation": True}}


def make_run(root: Path, seed=0, loco=False):
    """Write <root>/data (manifest + images + masks) and <root>/pred, <root>/valpred."""
    rng = np.random.default_rng(seed)
    data, pred, vpred = root / "data", root / "pred", root / "valpred"
    for d in (data / "img", data / "mask", data / "inst", pred / "maps", vpred / "maps"):
        d.mkdir(parents=True, exist_ok=True)
    samples, maps = [], {}
    plan = [("train", 0, [])] * 2 + [("val", 0, []), ("val", 1, ["dent"]), ("val", 1, ["water_stain"])] + \
           [("test", 0, [])] * 3 + [("test", 1, ["dent"]), ("test", 1, ["scratch"]),
                                    ("test", 1, ["dent", "water_stain"]), ("test", 1, ["scratch"])]
    for i, (split, label, classes) in enumerate(plan):
        sid = f"{i:06d}"
        rgb = (rng.random((H, W, 3)) * 255).astype(np.uint8)
        dolp = (rng.random((H, W)) * 65535).astype(np.uint16)
        cv2.imwrite(str(data / "img" / f"{sid}_intensity.png"), rgb)
        cv2.imwrite(str(data / "img" / f"{sid}_dolp.png"), dolp)
        files = {"intensity": f"img/{sid}_intensity.png", "dolp": f"img/{sid}_dolp.png"}
        inst = np.zeros((H, W), np.uint16)
        instances = []
        for k, c in enumerate(classes, 1):
            y, x = 4 + 12 * (k - 1), 5 + 3 * i % 20
            inst[y:y + 6, x:x + 8] = k
            instances.append({"id": k, "class": c, "kind": CLASSES[c]})
        m = np.where(inst > 0, 255, 0).astype(np.uint8)
        e = {"id": sid, "split": split, "label": label, "classes": classes, "source": "hand-made",
             "files": files, "mask": None, "instance_mask": None, "instances": instances, "sha256": {}}
        if label:
            cv2.imwrite(str(data / "mask" / f"{sid}.png"), m)
            cv2.imwrite(str(data / "inst" / f"{sid}.png"), inst)
            e["mask"], e["instance_mask"] = f"mask/{sid}.png", f"inst/{sid}.png"
            if loco:  # as `polar_detect.dataset import-loco` writes them: one region PNG per instance
                for k, it in enumerate(instances, 1):
                    p = f"mask/{sid}_region_{k}.png"
                    cv2.imwrite(str(data / p), np.where(inst == k, 255, 0).astype(np.uint8))
                    it.update(region_mask=p, **LOCO_CONFIG[it["class"]])
        samples.append(e)
        if split in ("val", "test"):
            maps[sid] = (rng.random((H, W)) * 0.6 + 0.5 * (inst > 0) * rng.random()).astype(np.float32)
    manifest = {"format": "polar_detect.dataset/1", "name": "handmade", "seed": seed,
                "modalities": {"intensity": {"channels": 3, "encoding": "png8", "normalisation": "/255"},
                               "dolp": {"channels": 1, "encoding": "png16", "normalisation": "/65535"}},
                "classes": CLASSES, "samples": samples}
    if loco:
        manifest["defects_config"] = {str(v): dict(LOCO_CONFIG[c], defect_name=c)
                                      for v, c in enumerate(sorted(LOCO_CONFIG), 1)}
    (data / "manifest.json").write_text(json.dumps(manifest, indent=1))
    sha = hashlib.sha256((data / "manifest.json").read_bytes()).hexdigest()
    for d, split in ((pred, "test"), (vpred, "val")):
        ids = [s["id"] for s in samples if s["split"] == split]
        for sid in ids:
            tifffile.imwrite(d / "maps" / f"{sid}.tiff", maps[sid])
        (d / "predictions.json").write_text(json.dumps({
            "model": "toy", "dataset": str(data / "manifest.json"), "manifest_sha256": sha, "split": split,
            "threshold": None, "scores": {sid: float(maps[sid].max()) for sid in ids},
            "maps": {sid: f"maps/{sid}.tiff" for sid in ids}}))
    return data, pred, vpred, samples, maps


@pytest.fixture
def run(tmp_path):
    return make_run(tmp_path, loco=True)


def test_report_builds_with_every_section(run, tmp_path, capsys):
    data, pred, vpred, samples, maps = run
    out = tmp_path / "eval"
    assert ev.main(["--pred", str(pred), "--data", str(data), "--out", str(out), "--val-pred", str(vpred)]) == 0
    assert "report.html" in capsys.readouterr().out
    html = (out / "report.html").read_text()
    for sec in SECTIONS:
        assert f'id="{sec}"' in html, sec
    for png in ("roc.png", "pr.png", "pro.png", "coverage_curve.png"):
        assert (out / png).is_file() and png in html
    examples = sorted(p.name for p in out.glob("example_*.png"))
    for c in ("dent", "scratch", "water_stain", "good"):
        assert any(c in e for e in examples), (c, examples)
    assert all(e in html for e in examples)
    m = json.loads((out / "metrics.json").read_text())
    assert m["manifest_sha256"] == hashlib.sha256((data / "manifest.json").read_bytes()).hexdigest()
    assert m["manifest_sha256_match"] is True
    assert m["threshold"]["source"] == "val (F1-max)" and m["threshold"]["value"] is not None
    assert m["spro"]["value"] is not None and m["spro"]["n_regions"] == 5
    test = [s for s in samples if s["split"] == "test"]
    regions, sats, rels = [], [], []
    for s in test:
        inst = cv2.imread(str(data / s["instance_mask"]), cv2.IMREAD_UNCHANGED) if s["mask"] else np.zeros((H, W))
        regions.append(np.stack([inst == i["id"] for i in s["instances"]]) if s["instances"] else np.zeros((0, H, W), bool))
        sats.append([i["saturation_threshold"] for i in s["instances"]])
        rels.append([i["relative_saturation"] for i in s["instances"]])
    assert m["spro"]["value"] == pytest.approx(auspro([maps[s["id"]] for s in test], regions, sats, rels), abs=1e-12)
    assert m["aupro"]["value"] == pytest.approx(aupro(np.stack([maps[s["id"]] for s in test]),
                                                      np.stack([r.any(axis=0) if len(r) else np.zeros((H, W), bool)
                                                                for r in regions])), abs=1e-12)
    assert set(m["defect_wise_recall"]["per_class"]) == {"dent", "scratch", "water_stain"}
    assert m["defect_wise_recall"]["per_class"]["water_stain"]["kind"] == "impurity"
    # numbers agree with direct computation
    y = [s["label"] for s in test]
    assert m["image"]["auroc"] == pytest.approx(roc_auc_score(y, [maps[s["id"]].max() for s in test]))
    px_s = np.concatenate([maps[s["id"]].ravel() for s in test])
    px_t = np.concatenate([(cv2.imread(str(data / s["mask"]), 0) > 0).ravel() if s["mask"]
                           else np.zeros(H * W, bool) for s in test])
    assert m["pixel"]["auroc"] == pytest.approx(roc_auc_score(px_t, px_s), abs=1e-12)
    t = m["threshold"]["value"]
    tp = int(((px_s >= t) & px_t).sum())
    assert m["thresholded"]["tp"] == tp


def test_histogram_mode_reports_bounds(run, tmp_path):
    data, pred, vpred, _, _ = run
    exact = ev.evaluate(pred, data, tmp_path / "a", vpred, report=False, quiet=True)
    approx = ev.evaluate(pred, data, tmp_path / "b", vpred, report=False, quiet=True,
                         max_exact_pixels=1000, bins=512)
    assert approx["approximation"]["mode"] == "hist" and exact["approximation"]["mode"] == "exact"
    assert abs(approx["pixel"]["auroc"] - exact["pixel"]["auroc"]) <= approx["pixel"]["auroc_error_bound"] + 1e-12
    assert approx["pixel"]["ap_lower"] <= exact["pixel"]["ap"] <= approx["pixel"]["ap_upper"]
    assert abs(approx["aupro"]["value"] - exact["aupro"]["value"]) <= approx["aupro"]["error_bound"] + 1e-12
    assert abs(approx["spro"]["value"] - exact["spro"]["value"]) <= approx["spro"]["error_bound"] + 1e-12


def test_without_validation_threshold_is_flagged(tmp_path):
    data, pred, _, _, _ = make_run(tmp_path)
    m = ev.evaluate(pred, data, tmp_path / "o", report=False, quiet=True)
    assert m["threshold"]["source"] == "test (optimistic)"
    assert m["spro"]["value"] is None and any("optimistic" in w for w in m["warnings"])


def test_cli_bad_input_exits_2_naming_the_file(run, tmp_path):
    data, pred, _, _, _ = run
    bad = pred / "maps" / "000007.tiff"
    bad.write_bytes(b"not a tiff")
    r = subprocess.run([sys.executable, "-m", "polar_detect.evaluate", "--pred", str(pred), "--data", str(data),
                        "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert "000007.tiff" in r.stderr


def test_overlay_colours():
    from polar_detect.report import overlay
    mask = np.array([[True, False, True, False]])
    pred = np.array([[True, True, False, False]])
    o = overlay(np.ones((1, 4, 3)), mask, pred)
    assert o[0, 0, 1] > 0.5 and o[0, 0, 0] == 0 and o[0, 0, 2] == 0   # TP green
    assert o[0, 1, 0] > 0.5 and o[0, 1, 1] == 0                       # FP red
    assert o[0, 2, 2] > 0.5 and o[0, 2, 0] == 0                       # FN blue
    assert np.allclose(o[0, 3], 0.5)                                  # TN: dimmed base


# --- degenerate thresholds and HTML escaping (issue 16 item 6) ---------------------------
class _Text(__import__("html.parser").parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts = []

    def handle_data(self, data):
        self.parts.append(data)


def _text(doc: str) -> str:
    p = _Text()
    p.feed(doc)
    return " ".join(p.parts)


def test_degenerate_threshold_is_flagged_everywhere(run, tmp_path, capsys):
    """A threshold below every score flags all normal pixels: R_DW = 1 for every class is
    trivial and must be shown as such (metrics.json, report.html, console summary)."""
    data, pred, vpred, _, maps = run
    out = tmp_path / "eval"
    assert ev.main(["--pred", str(pred), "--data", str(data), "--out", str(out), "--threshold", "-1"]) == 0
    console = capsys.readouterr()
    m = json.loads((out / "metrics.json").read_text())
    d = m["threshold"]["degeneracy"]
    assert m["threshold"]["degenerate"] is True and d["normal_pixel_fraction"] == 1.0
    assert d["normal_images_flagged"] == d["normal_images"] == 3 and d["limit"] == 0.5
    assert m["thresholded"]["threshold_degenerate"] is True and m["defect_wise_recall"]["threshold_degenerate"] is True
    assert all(c["recall"] == 1.0 for c in m["defect_wise_recall"]["per_class"].values())
    assert any("degenerate threshold" in w for w in m["warnings"])
    assert "DEGENERATE THRESHOLD -1" in console.out and "mR_DW (1.0000: trivial, degenerate threshold)" in console.out
    doc = (out / "report.html").read_text()
    text = _text(doc)
    assert "Degenerate threshold" in text and "trivially satisfied" in text
    # every R_DW value sits struck inside a greyed span, none as a plain cell
    assert doc.count('<td><span class="trivial"') >= 3 * len(m["defect_wise_recall"]["per_class"])
    assert "<td>1.0000</td>" not in doc.split('id="defect-wise-recall"')[1].split("</section>")[0]


def test_sane_threshold_is_not_flagged(run, tmp_path, capsys):
    data, pred, vpred, _, _ = run
    out = tmp_path / "eval"
    assert ev.main(["--pred", str(pred), "--data", str(data), "--out", str(out), "--threshold", "0.65"]) == 0
    assert "DEGENERATE" not in capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    assert m["threshold"]["degenerate"] is False and m["threshold"]["degeneracy"]["normal_pixel_fraction"] < 0.5
    doc = (out / "report.html").read_text()
    assert 'class="trivial"' not in doc and "ok: flags" in _text(doc)


def test_report_has_no_double_escaped_entities(run, tmp_path):
    data, pred, vpred, _, _ = run
    out = tmp_path / "eval"
    ev.evaluate(pred, data, out, vpred, quiet=True)
    doc = (out / "report.html").read_text()
    import re
    assert not re.search(r"&amp;(#\d+|#x[0-9a-fA-F]+|[A-Za-z]+);", doc)
    text = _text(doc)
    assert "AUPRO (FPR ≤ 0.3)" in text and "&le;" not in text
    # text from the data is escaped once: a model name with markup shows literally
    m = json.loads((out / "metrics.json").read_text())
    from polar_detect.report import build_report
    m["model"] = "<b>A&B</b>"
    build_report(m, {}, [], tmp_path / "r2")
    doc2 = (tmp_path / "r2" / "report.html").read_text()
    assert "&lt;b&gt;A&amp;B&lt;/b&gt;" in doc2 and "<b>A&B</b>" in _text(doc2)
