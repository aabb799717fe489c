"""report.html (polar_detect.evaluation.report): end to end, a hand-made dataset + predictions
following packages/detect/README.md (sections 2 and 4) -> polar_detect.evaluation.evaluate ->
metrics.json + report.html with every section; degenerate thresholds shown as trivial; HTML
escaping."""
import hashlib
import json

import cv2
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from polar_detect.evaluation import evaluate as ev
from polar_detect.metrics import aupro, auspro
from polar_detect.evaluation.report import SECTIONS

from tests.detect.evaluation.handmade import H, W


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
    from polar_detect.evaluation.report import build_report
    m["model"] = "<b>A&B</b>"
    build_report(m, {}, [], tmp_path / "r2")
    doc2 = (tmp_path / "r2" / "report.html").read_text()
    assert "&lt;b&gt;A&amp;B&lt;/b&gt;" in doc2 and "<b>A&B</b>" in _text(doc2)
