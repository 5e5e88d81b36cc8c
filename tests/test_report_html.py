"""The batch report's HTML gallery (core.report_html): a real batch through the crop command with
--qc (clean, untrusted and failed cases), and the renderer on rows made up here."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
from html.parser import HTMLParser

import pytest
import SimpleITK as sitk
from conftest import CHEST, SMALL, run_in_process

from nnunet_ctarr.cli.crop import main
from nnunet_ctarr.core.base.images import read_image
from nnunet_ctarr.core.outputs.report_html import picture_finder, render_report_html
from nnunet_ctarr.evaluation.hard_cases import head_neck


class Page(HTMLParser):
    """The cards (status, heading, picture, facts), the filter's checkboxes and the scripts of a page."""

    def __init__(self, text: str):
        super().__init__()
        self.cards, self.filters, self.scripts, self.external = [], [], [], []
        self._field, self._th = None, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section" and "card" in a.get("class", "").split():
            self.cards.append({"status": a["data-status"], "h2": "", "img": None, "nopic": "", "facts": {}})
        elif tag == "input" and a.get("type") == "checkbox":
            self.filters.append(a["value"])
        elif tag == "img":
            self.cards[-1]["img"] = a["src"]
        elif tag in ("link", "script") and (a.get("href") or a.get("src")):
            self.external.append(a.get("href") or a.get("src"))
        if tag == "script":
            self.scripts.append("")
        self._field = {"h2": "h2", "th": "th", "td": "td", "script": "script"}.get(tag, self._field)
        if tag == "div" and "nopic" in a.get("class", ""):
            self._field = "nopic"

    def handle_endtag(self, tag):
        if tag in ("h2", "th", "td", "script", "div"):
            self._field = None

    def handle_data(self, data):
        if self._field == "script":
            self.scripts[-1] += data
        elif self._field == "th":
            self._th = data
        elif self._field == "td" and self.cards:
            self.cards[-1]["facts"][self._th] = self.cards[-1]["facts"].get(self._th, "") + data
        elif self._field in ("h2", "nopic") and self.cards:
            self.cards[-1][self._field] += data


@pytest.fixture(scope="module")
def qc_batch(tmp_path_factory):
    """sm and chest (clean), a head-neck-like CT (untrusted, whole image written) and a corrupt
    file (failed), cropped into liver with --qc under umask 027."""
    root = tmp_path_factory.mktemp("qcbatch")
    imgs, anat, out = root / "imgs", root / "anat", root / "crops"
    imgs.mkdir(), anat.mkdir()
    for case, (img, lab) in (("chest", CHEST), ("sm", SMALL)):
        shutil.copy(img, imgs / f"{case}.nii.gz")
        shutil.copy(lab, anat / f"{case}.nii.gz")
    hn_img, hn_lab = head_neck(read_image(CHEST[0]), read_image(CHEST[1]), neck_mm=90.0)
    sitk.WriteImage(hn_img, str(imgs / "hn.nii.gz"))
    sitk.WriteImage(hn_lab, str(anat / "hn.nii.gz"))
    (imgs / "bad.nii.gz").write_bytes(b"garbage" * 100)
    shutil.copy(SMALL[1], anat / "bad.nii.gz")
    old = os.umask(0o027)
    try:
        r = run_in_process(main, ["-i", str(imgs), "-anatomy_seg", str(anat), "-r", "liver", "-o", str(out), "--qc"])
    finally:
        os.umask(old)
    assert r.returncode == 1, r.stderr
    rows = json.loads((out / "ctarr_report.json").read_text())["rows"]
    return out, rows, Page((out / "ctarr_report.html").read_text())


def test_gallery_shows_every_row_worst_first(qc_batch):
    out, rows, page = qc_batch
    assert sorted((c["h2"], c["status"]) for c in page.cards) == sorted(
        (f"{r['case']} / {r['region']}", r["status"]) for r in rows
    )
    assert [c["status"] for c in page.cards] == ["failed", "untrusted: whole image", "cropped", "cropped"]
    assert page.cards[0]["h2"] == "bad / liver" and page.cards[1]["h2"] == "hn / liver"
    dice = [float(c["facts"]["registration Dice"]) for c in page.cards[2:]]
    assert dice == sorted(dice)  # the clean ones: lowest registration Dice first
    by_case = {r["case"]: r for r in rows}
    assert page.cards[0]["facts"]["error"] == by_case["bad"]["error"]
    hn = page.cards[1]["facts"]
    assert hn["trusted"].startswith("no") and by_case["hn"]["reasons"] in hn["trusted"]
    assert hn["orientation"] == by_case["hn"]["orientation"] and hn["voxels kept"] == "100.0%"
    for c in page.cards[2:]:
        r = by_case[c["h2"].split(" / ")[0]]
        assert c["facts"]["trusted"] == "yes" and c["facts"]["region Dice"] == f"{r['region_dice']:.3f}"
        assert c["facts"]["scale x y z"] == " ".join(f"{s:.2f}" for s in r["scale_xyz"])


def test_gallery_embeds_the_qc_pictures(qc_batch):
    out, _, page = qc_batch
    assert page.cards[0]["img"] is None and page.cards[0]["nopic"] == "no picture"  # failed: nothing drawn
    for c in page.cards[1:]:
        prefix = "data:image/png;base64,"
        assert c["img"].startswith(prefix), c["h2"]
        png = base64.b64decode(c["img"][len(prefix) :], validate=True)
        case, region = c["h2"].split(" / ")
        assert png.startswith(b"\x89PNG") and png == (out / f"{case}_{region}_qc.png").read_bytes()
    assert page.external == []  # self-contained: nothing fetched


def test_gallery_filter_and_file(qc_batch):
    out, rows, page = qc_batch
    assert page.filters == ["failed", "untrusted: whole image", "cropped"]  # each status present, worst first
    js = "".join(page.scripts)
    assert "addEventListener('change'" in js and "location.hash" in js
    assert stat.S_IMODE((out / "ctarr_report.html").stat().st_mode) == 0o640  # the umask of the run
    assert not list(out.glob(".tmp_*"))


def _rows():
    return [
        {"case": "ok_high", "region": "liver", "status": "cropped", "trusted": True, "registration_dice": 0.9},
        {"case": "a<b&c", "region": 'liv"er', "status": "failed", "error": "cannot read <x> & 'y'"},
        {"case": "ok_low", "region": "liver", "status": "done before", "trusted": True, "registration_dice": 0.4},
        {
            "case": "skip",
            "region": "liver",
            "status": "untrusted: skipped",
            "trusted": False,
            "reasons": "Dice < 0.25",
            "warnings": "w1 | <w2>",
        },
        {
            "case": "out",
            "region": "liver",
            "status": "outside the field of view",
            "trusted": True,
            "registration_dice": 0.2,
        },
    ]


def test_renderer_escapes_data_and_orders_rows():
    text = render_report_html(_rows(), lambda r: None, "batch <&>", qc=False)
    assert "a<b&c" not in text and "<x>" not in text and "<w2>" not in text and "batch <&>" not in text
    assert "a&lt;b&amp;c / liv&quot;er" in text and "cannot read &lt;x&gt; &amp; &#x27;y&#x27;" in text
    page = Page(text)
    assert [c["h2"] for c in page.cards] == [
        'a<b&c / liv"er',
        "skip / liver",
        "out / liver",
        "ok_low / liver",
        "ok_high / liver",
    ]
    assert page.cards[0]["facts"]["error"] == "cannot read <x> & 'y'"
    assert all(c["nopic"] == "no picture (run without --qc)" for c in page.cards)
    assert page.filters == ["failed", "untrusted: skipped", "outside the field of view", "cropped", "done before"]


def test_pictures_past_the_limit_are_linked(tmp_path):
    rows = [
        {"case": c, "region": "liver", "status": "cropped", "orientation": "as in header", "registration_dice": d}
        for c, d in (("good", 0.9), ("worse", 0.5), ("worst", 0.3))
    ]
    for r in rows:
        (tmp_path / f"{r['case']}_liver_qc.png").write_bytes(b"\x89PNG" + b"x" * 100)
    rows.append({"case": "whole", "region": "liver", "status": "failed", "orientation": None})
    (tmp_path / "whole_liver_qc.png").write_bytes(b"\x89PNG")  # left over: a failed row has no picture
    page = Page(render_report_html(rows, picture_finder(tmp_path, limit=250), "t"))
    srcs = {c["h2"]: c["img"] for c in page.cards}
    assert srcs["worst / liver"].startswith("data:") and srcs["worse / liver"].startswith("data:")
    assert srcs["good / liver"] == "good_liver_qc.png" and srcs["whole / liver"] is None
