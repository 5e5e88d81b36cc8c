"""The batch report as one self-contained HTML page, ``ctarr_report[part].html``: the QC
pictures of the crop command (``--qc``) worst first, the report's numbers beside each, and a
filter by status.

One file: pictures embedded as base64 data URIs, CSS and JS inline, nothing fetched. Order:
failed, untrusted, outside the field of view, then the clean rows by registration Dice (lowest
first). Rows without a picture (failed, skipped, run without ``--qc``) show their numbers and a
placeholder. Pictures are embedded worst first up to :data:`EMBED_LIMIT_BYTES` (50-170 KB each:
some 2000 pictures); beyond it a picture is linked by its file name, which works while the
page sits beside the pictures. ``#status=untrusted,failed`` in the address shows only statuses
starting with those words. Every text from the data is HTML-escaped.
"""
from __future__ import annotations

import base64
import html
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from ..base.files import write_text
from .qc import picture_name

#: statuses worst first (the clean two share a rank and are ordered by Dice)
SEVERITY = {"failed": 0, "untrusted: cropped anyway": 1, "untrusted: skipped": 2, "untrusted: whole image": 3,
            "outside the field of view": 4, "cropped": 5, "done before": 5}
#: statuses whose rows the crop writer draws a QC picture for (when there is a localisation)
PICTURED = ("cropped", "done before", "untrusted: whole image", "untrusted: cropped anyway", "untrusted: skipped",
            "outside the field of view")
#: embedded picture bytes per page; later (better) pictures are linked by file name
EMBED_LIMIT_BYTES = 256 * 2 ** 20

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#222}
header{position:sticky;top:0;z-index:1;background:#fff;border-bottom:1px solid #ccc;padding:8px 16px}
h1{font-size:18px;margin:0 0 4px}
#filter label{margin-right:14px;white-space:nowrap}
#filter button{margin-right:6px}
main{padding:10px 16px}
.card{display:flex;gap:14px;background:#fff;border-left:6px solid #2e7d32;margin:0 0 12px;padding:10px;
border-radius:4px;box-shadow:0 1px 2px #0002}
.card[hidden]{display:none}
.sev0{border-left-color:#c62828}.sev1,.sev2,.sev3{border-left-color:#ef6c00}.sev4{border-left-color:#6a1b9a}
.pic{flex:none}
.pic img{width:560px;max-width:48vw;height:auto;display:block}
.nopic{width:560px;max-width:48vw;height:120px;display:flex;align-items:center;justify-content:center;
background:#eee;color:#777;border:1px dashed #bbb}
.facts h2{font-size:16px;margin:0 0 6px;word-break:break-all}
.facts table{border-collapse:collapse}
.facts th{text-align:left;color:#555;font-weight:normal;padding:1px 12px 1px 0;vertical-align:top;white-space:nowrap}
.facts td{padding:1px 0;vertical-align:top}
.status{font-weight:bold}.bad{color:#c62828}
footer{color:#666;padding:0 16px 16px}
"""

_JS = """
(function(){
var boxes=[].slice.call(document.querySelectorAll('#filter input'));
var cards=[].slice.call(document.querySelectorAll('.card'));
function apply(){
  var on={},n=0;boxes.forEach(function(b){on[b.value]=b.checked;});
  cards.forEach(function(c){var s=!!on[c.getAttribute('data-status')];c.hidden=!s;if(s)n++;});
  document.getElementById('shown').textContent=n;
}
function fromHash(){
  var m=/(?:^#|&)status=([^&]*)/.exec(location.hash);if(!m)return;
  var want=decodeURIComponent(m[1].replace(/\\+/g,' ')).split(',');
  boxes.forEach(function(b){b.checked=want.some(function(w){
    return w==='all'||(w!==''&&b.value.indexOf(w)===0);});});
}
function all(v){boxes.forEach(function(b){b.checked=v;});apply();}
boxes.forEach(function(b){b.addEventListener('change',apply);});
document.getElementById('all').onclick=function(){all(true);};
document.getElementById('none').onclick=function(){all(false);};
window.addEventListener('hashchange',function(){fromHash();apply();});
fromHash();apply();
})();
"""


def worst_first(rows: list[dict]) -> list[dict]:
    """Rows by severity, then lowest registration Dice (none first), region Dice, case, region."""
    def key(r: dict) -> tuple:
        dice = [r.get(k) for k in ("registration_dice", "region_dice")]
        return (SEVERITY.get(r["status"], 0), *(-1.0 if d is None else d for d in dice),
                str(r["case"]), str(r["region"]))
    return sorted(rows, key=key)


def _esc(x) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _num(x, fmt: str) -> str:
    return "—" if x is None or x == "" else format(float(x), fmt)


def _facts(r: dict) -> list[tuple[str, str]]:
    """(label, escaped HTML) of one row's numbers; "—": none (not shown)."""
    trusted = {True: "yes", False: '<span class="bad">no</span>'}.get(r.get("trusted"), "—")
    scale = r.get("scale_xyz")
    kept, lab = r.get("voxel_fraction_kept"), r.get("label_voxels_preserved_percent")
    warnings = [w for w in (r.get("warnings") or "").split(" | ") if w]
    return [
        ("status", f'<span class="status">{_esc(r["status"])}</span>'),
        ("trusted", trusted + (f" — {_esc(r['reasons'])}" if r.get("reasons") else "")),
        ("orientation", _esc(r.get("orientation")) or "—"),
        ("scale x y z", " ".join(_num(s, ".2f") for s in scale) if scale else "—"),
        ("registration Dice", _num(r.get("registration_dice"), ".3f")),
        ("region Dice", _num(r.get("region_dice"), ".3f")),
        ("voxels kept", "—" if kept is None else f"{100 * float(kept):.1f}%"),
        ("label voxels preserved", "—" if lab is None else f"{float(lab):.2f}%"),
        ("outputs", _esc(r.get("n_outputs")) or "—"),
        ("seconds", _num(r.get("seconds"), ".1f")),
        ("warnings", "<br>".join(_esc(w) for w in warnings) or "—"),
        ("error", f'<span class="bad">{_esc(r["error"])}</span>' if r.get("error") else "—"),
    ]


def _card(i: int, r: dict, src: str | None, no_picture: str) -> str:
    """One row: its picture (or the placeholder) and its numbers."""
    who = f"{_esc(r['case'])} / {_esc(r['region'])}"
    pic = (f'<div class="pic"><img src="{_esc(src)}" alt="QC picture {who}" loading="lazy"></div>' if src
           else f'<div class="pic nopic">{_esc(no_picture)}</div>')
    table = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in _facts(r) if v != "—")
    return (f'<section class="card sev{SEVERITY.get(r["status"], 0)}" id="row{i}" data-status="{_esc(r["status"])}">'
            f'{pic}<div class="facts"><h2>{who}</h2><table>{table}</table></div></section>')


def _filter(rows: list[dict]) -> str:
    """One checkbox per status present (worst first), with its count."""
    present = sorted({r["status"] for r in rows}, key=lambda s: (SEVERITY.get(s, 0), s))
    boxes = "".join(f'<label><input type="checkbox" value="{_esc(s)}" checked> {_esc(s)} '
                    f'({sum(r["status"] == s for r in rows)})</label>' for s in present)
    return (f'<div id="filter">show: {boxes}<button type="button" id="all">all</button>'
            '<button type="button" id="none">none</button></div>')


def render_report_html(rows: list[dict], picture: Callable[[dict], str | None], title: str,
                       qc: bool = True) -> str:
    """The page: ``rows`` (report rows) worst first, ``picture(row)`` giving each picture's
    ``src`` (a data URI or a file name) or None; ``qc``: whether the run drew pictures."""
    ordered = worst_first(_one_card_per_failed_case(rows))
    srcs = [picture(r) for r in ordered]                  # in order: the worst are embedded first
    embedded = sum(bool(s) and s.startswith("data:") for s in srcs)
    linked = sum(bool(s) and not s.startswith("data:") for s in srcs)
    no_picture = "no picture" if qc else "no picture (run without --qc)"
    cards = "\n".join(_card(i, r, s, no_picture) for i, (r, s) in enumerate(zip(ordered, srcs)))
    note = f"{embedded} picture(s) embedded" + (f", {linked} linked by file name (over the size limit)"
                                                 if linked else "")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{_esc(title)}</title>'
            f"<style>{_CSS}</style></head><body>\n<header><h1>{_esc(title)}</h1>"
            f'<div>showing <span id="shown">{len(ordered)}</span> of {len(ordered)} case-region row(s), '
            f"worst first (failed, untrusted, outside the field of view, then lowest registration Dice)</div>"
            f"{_filter(ordered)}</header>\n<main>\n{cards}\n</main>\n<footer>{note}</footer>"
            f"<script>{_JS}</script></body></html>\n")


def _one_card_per_failed_case(rows: list[dict]) -> list[dict]:
    """A case that failed as a whole (the same error for several regions) shows as one row."""
    out, seen = [], {}
    for r in rows:
        if r["status"] != "failed":
            out.append(r)
            continue
        key = (r["case"], r.get("error"))
        if key in seen:
            seen[key]["region"] = f"{seen[key]['_n'] + 1} regions"
            seen[key]["_n"] += 1
            continue
        seen[key] = dict(r, _n=1)
        out.append(seen[key])
    return out


def picture_finder(folder: Path | None, limit: int = EMBED_LIMIT_BYTES) -> Callable[[dict], str | None]:
    """``picture(row)`` for :func:`render_report_html`: the row's QC picture in ``folder`` as a
    data URI while the embedded bytes stay within ``limit``, then its file name; None where the
    crop writer draws none (``folder`` None: the run had no ``--qc``)."""
    used = 0

    def picture(row: dict) -> str | None:
        nonlocal used
        if folder is None or row["status"] not in PICTURED or row.get("orientation") is None:
            return None
        path = folder / picture_name(row["case"], row["region"])
        if not path.is_file():
            return None
        data = path.read_bytes()
        if used + len(data) > limit:
            return quote(path.name)
        used += len(data)
        return "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return picture


def write_report_html(path: Path, rows: list[dict], qc_folder: Path | None) -> None:
    """``path`` (atomic, umask permissions): the gallery of ``rows`` with the QC pictures found in
    ``qc_folder`` (None: a run without ``--qc``, every row has the placeholder)."""
    title = f"CTARR crop report: {path.parent.name}/{path.name}"
    page = render_report_html(rows, picture_finder(qc_folder), title, qc=qc_folder is not None)
    write_text(path, page.encode("ascii", "xmlcharrefreplace").decode("ascii"))   # any locale, any case id
