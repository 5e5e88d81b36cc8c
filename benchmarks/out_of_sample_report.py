"""Tables of the out-of-sample evaluation (benchmarks/eval_out_of_sample.py): summaries per atlas,
suite and anatomy source, the trust thresholds each source's rows support, and the failing rows.

A row is one case x region x source x atlas, as the crop command decides it. Organ "in view": at
least 1 ml of the region's organ in the truth labels; "not in view": less than 0.5 ml, or a real
head-neck scan without labels (none of the built-in regions' organs is in a head-neck scan).
"""

from __future__ import annotations

import json

import numpy as np

from nnunet_ctarr.core.localise import trust as T

IN_VIEW_ML, NOT_IN_VIEW_ML = 1.0, 0.5
SOURCES = ("totalsegmentator_map", "mask_folder", "hu", "hu_coarse")
CROPPED, WHOLE, OUTSIDE = "cropped", "untrusted: whole image", "outside the field of view"


def in_view(r: dict) -> bool:
    return r.get("organ_ml") is not None and r["organ_ml"] >= IN_VIEW_ML


def not_in_view(r: dict) -> bool:
    return r["region"] != "(all)" and (r.get("organ_ml") is None or r["organ_ml"] < NOT_IN_VIEW_ML)


def summary(rows: list[dict]) -> dict:
    """The numbers of one (atlas, suite, source) group."""
    by_case: dict[str, dict] = {}
    for r in rows:
        by_case.setdefault(r["case"], r)
    cells = [r for r in rows if in_view(r) and r.get("kept") is not None]
    orient = [r["orientation_ok"] for r in by_case.values() if "orientation_ok" in r]
    gd = [r["group_dice_vs_ts"] for r in by_case.values() if r.get("group_dice_vs_ts") is not None]

    def share(status: str) -> float | None:
        return float(np.mean([r["status"] == status for r in cells])) if cells else None

    return {
        "cases": len(by_case),
        "tracebacks": sum("traceback" in r for r in by_case.values()),
        "failed": sum("failed" in r for r in by_case.values()),
        "orientation_right": sum(orient),
        "orientation_wrong": len(orient) - sum(orient),
        "regions_in_view": len(cells),
        "kept_mean": float(np.mean([r["kept"] for r in cells])) if cells else None,
        "kept_min": float(np.min([r["kept"] for r in cells])) if cells else None,
        "crop_share_mean": float(np.mean([r["crop_share"] for r in cells])) if cells else None,
        "cropped": share(CROPPED),
        "whole": share(WHOLE),
        "outside_in_view": [
            f"{r['case']}:{r['region']} ({r['organ_ml']:.0f} ml)" for r in cells if r["status"] == OUTSIDE
        ],
        "cropped_losing_3pct": [
            f"{r['case']}:{r['region']} {r['kept']:.1f}%" for r in cells if r["status"] == CROPPED and r["kept"] < 97.0
        ],
        "cropped_not_in_view": [
            f"{r['case']}:{r['region']}" for r in rows if r.get("status") == CROPPED and not_in_view(r)
        ],
        "seconds_median": float(np.median([r["seconds"] for r in by_case.values()])),
        "group_dice_median": float(np.median(gd)) if gd else None,
    }


def groups_of(rows: list[dict]):
    keys = {(r["context"], r["suite"], r["source"]) for r in rows}
    for k in sorted(keys, key=lambda k: (not k[0].startswith("in-sample"), k[0], k[1], SOURCES.index(k[2]))):
        yield k, [r for r in rows if (r["context"], r["suite"], r["source"]) == k]


def _other_reasons(r: dict) -> bool:
    """Whether the verdict has reasons besides the two Dice thresholds (outside the atlas, organ rules)."""
    return any("Dice" not in part for part in (r.get("reasons") or "").split("; ") if part)


def calibrate(rows: list[dict], source: str) -> dict:
    """The registration-Dice and region-Dice thresholds that crop no bad region (organ in view but a
    wrong orientation, or > 3 % of the organ lost if cropped) and the most good ones, the other rules
    as they are. A row whose scan failed the current Dice rule has no region Dice (the rule stops
    there): lowering the threshold lets it pass unchecked, an optimistic approximation."""
    cells = [
        r
        for r in rows
        if r["source"] == source
        and r.get("status") in (CROPPED, WHOLE)
        and "registration_dice" in r
        and r.get("kept_if_cropped") is not None
        and in_view(r)
    ]
    good = [r for r in cells if r["orientation_ok"] and r["kept_if_cropped"] >= 97.0]
    bad = [r for r in cells if not r["orientation_ok"] or r["kept_if_cropped"] < 97.0]

    def passes(r, a, b):
        rd = r.get("region_dice")
        return r["registration_dice"] >= a and (rd is None or rd >= b) and not _other_reasons(r)

    region_now = T.MIN_REGION_DICE["hu" if source.startswith("hu") else "map"]
    best = None
    for a in np.round(np.arange(0.05, 0.61, 0.01), 2):
        for b in np.round(np.arange(0.0, 0.61, 0.02), 2):
            nb, ng = sum(passes(r, a, b) for r in bad), sum(passes(r, a, b) for r in good)
            key = (-nb, ng, -abs(a - T.MIN_PLAUSIBLE_DICE) - abs(b - region_now))
            if best is None or key > best[0]:
                best = (key, float(a), float(b), nb, ng)
    span = lambda xs: [round(min(xs), 3), round(max(xs), 3)] if xs else None  # noqa: E731
    now = (T.MIN_PLAUSIBLE_DICE, region_now)
    return {
        "good": len(good),
        "bad": len(bad),
        "registration_dice_good": span([r["registration_dice"] for r in good]),
        "registration_dice_bad": span([r["registration_dice"] for r in bad]),
        "region_dice_good": span([r["region_dice"] for r in good if r.get("region_dice") is not None]),
        "region_dice_bad": span([r["region_dice"] for r in bad if r.get("region_dice") is not None]),
        "now": {"bad": sum(passes(r, *now) for r in bad), "good": sum(passes(r, *now) for r in good)},
        "proposed": {"min_plausible_dice": best[1], "min_region_dice": best[2], "bad": best[3], "good": best[4]},
        "bad_passing_now": sorted(
            {
                f"{r['context'][:4]} {r['case']}:{r['region']} {r['kept_if_cropped']:.0f}%"
                for r in bad
                if passes(r, *now)
            }
        ),
    }


def calibrate_in_view(rows: list[dict], source: str) -> dict:
    """The organ-in-view rule's measure (the share of the atlas's organ mapped into the image) on the
    regions it judges (decided cropped or outside): its range for organs in view and not in view, and
    what the current MIN_IN_VIEW does with them."""
    cells = [
        r
        for r in rows
        if r["source"] == source and r.get("status") in (CROPPED, OUTSIDE) and r.get("atlas_share_in_view") is not None
    ]
    yes = [r for r in cells if in_view(r)]
    no = [r for r in cells if not_in_view(r)]
    if not yes and not no:
        return {}
    span = lambda xs: [round(min(xs), 3), round(max(xs), 3)] if xs else None  # noqa: E731
    return {
        "in_view": len(yes),
        "not_in_view": len(no),
        "range_in_view": span([r["atlas_share_in_view"] for r in yes]),
        "range_not_in_view": span([r["atlas_share_in_view"] for r in no]),
        "in_view_outside": [
            f"{r['case']}:{r['region']} ({r['organ_ml']:.0f} ml, {r['atlas_share_in_view']:.3f})"
            for r in yes
            if r["status"] == OUTSIDE
        ],
        "not_in_view_cropped": [
            f"{r['case']}:{r['region']} ({r['atlas_share_in_view']:.3f})" for r in no if r["status"] == CROPPED
        ],
    }


def fmt(v, f: str = ".2f") -> str:
    return "" if v is None else format(v, f)


def pct(v) -> str:
    return "" if v is None else f"{100 * v:.0f}%"


def summary_table(rows: list[dict]) -> list[str]:
    out = [
        "| atlas | suite | source | cases | tracebacks / failed | orientation right / wrong | regions with organ "
        "in view | kept mean / min % | crop share | cropped / untrusted (whole) | cropped losing > 3 % | outside "
        "although in view | cropped, organ not in view | s / case (median) | HU groups vs TS map (Dice) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (ctx, suite, src), rs in groups_of(rows):
        s = summary(rs)
        out.append(
            f"| {ctx} | {suite} | {src} | {s['cases']} | {s['tracebacks']} / {s['failed']} | "
            f"{s['orientation_right']} / {s['orientation_wrong']} | {s['regions_in_view']} | "
            f"{fmt(s['kept_mean'])} / {fmt(s['kept_min'])} | {pct(s['crop_share_mean'])} | "
            f"{pct(s['cropped'])} / {pct(s['whole'])} | {len(s['cropped_losing_3pct'])} | "
            f"{len(s['outside_in_view'])} | {len(s['cropped_not_in_view'])} | {s['seconds_median']:.2f} | "
            f"{fmt(s['group_dice_median'])} |"
        )
    return out


def region_table(rows: list[dict]) -> list[str]:
    """Per region: organ voxels kept (mean / min %, as written) and the share cropped, for the
    TotalSegmentator map and the HU anatomy, per atlas (regions whose organ is in view)."""
    contexts = sorted({r["context"] for r in rows}, key=lambda c: (not c.startswith("in-sample"), c))
    cols = [(c, s) for c in contexts for s in ("totalsegmentator_map", "hu")]
    out = [
        "| region | " + " | ".join(f"{c[:24]} {s}: kept mean / min %, cropped" for c, s in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for region in sorted({r["region"] for r in rows if r["region"] != "(all)"}):
        cells = []
        for c, s in cols:
            sel = [
                r
                for r in rows
                if r["context"] == c
                and r["source"] == s
                and r["region"] == region
                and in_view(r)
                and r.get("kept") is not None
            ]
            cells.append(
                f"{np.mean([r['kept'] for r in sel]):.1f} / {np.min([r['kept'] for r in sel]):.1f}, "
                f"{pct(np.mean([r['status'] == CROPPED for r in sel]))}"
                if sel
                else ""
            )
        out.append(f"| {region} | " + " | ".join(cells) + " |")
    return out


def threshold_tables(rows: list[dict]) -> list[str]:
    out = [
        "| source | good / bad crops | registration Dice good / bad | region Dice good / bad | now (0.25, 0.30): "
        "bad / good passing | proposed MIN_PLAUSIBLE_DICE, MIN_REGION_DICE | then: bad / good passing | bad "
        "passing now |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for src in SOURCES:
        c = calibrate(rows, src)
        if c["good"] or c["bad"]:
            p = c["proposed"]
            out.append(
                f"| {src} | {c['good']} / {c['bad']} | {c['registration_dice_good']} / "
                f"{c['registration_dice_bad']} | {c['region_dice_good']} / {c['region_dice_bad']} | "
                f"{c['now']['bad']} / {c['now']['good']} | {p['min_plausible_dice']}, {p['min_region_dice']} | "
                f"{p['bad']} / {p['good']} | {'; '.join(c['bad_passing_now'][:6])} |"
            )
    out += [
        "",
        f"Organ in view (`MIN_IN_VIEW` = {T.MIN_IN_VIEW}: the share of the atlas's organ mapped into the "
        "image, for anatomies without the organ's channel), on the regions decided cropped or outside:",
        "",
        "| source | in view / not in view | share range in view | share range not in view | in view but "
        "outside | not in view but cropped |",
        "|---|---|---|---|---|---|",
    ]
    for src in SOURCES:
        c = calibrate_in_view(rows, src)
        if c:
            out.append(
                f"| {src} | {c['in_view']} / {c['not_in_view']} | {c['range_in_view']} | "
                f"{c['range_not_in_view']} | {'; '.join(c['in_view_outside'][:6]) or 'none'} | "
                f"{'; '.join(c['not_in_view_cropped'][:6]) or 'none'} |"
            )
    return out


def failing_rows(rows: list[dict]) -> list[str]:
    out = [
        "| atlas | source | case | region | organ ml | status | kept % (if cropped) | reg. Dice | region Dice | "
        "atlas share in view | reasons / error |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        status = r.get("status")
        bad = (
            "traceback" in r
            or (status == CROPPED and ((in_view(r) and r["kept"] < 97.0) or not_in_view(r)))
            or (status == OUTSIDE and in_view(r))
        )
        if bad:
            out.append(
                f"| {r['context'][:28]} | {r['source']} | {r['case']} | {r['region']} | "
                f"{fmt(r.get('organ_ml'), '.0f')} | {status} | {fmt(r.get('kept_if_cropped'), '.1f')} | "
                f"{fmt(r.get('registration_dice'))} | {fmt(r.get('region_dice'))} | "
                f"{fmt(r.get('atlas_share_in_view'), '.3f')} | "
                f"{r.get('reasons') or r.get('traceback') or r.get('failed') or ''} |"
            )
    return out


def markdown(rows: list[dict], meta: dict, command: str) -> str:
    out = [f"Regenerate: `{command} --out docs/out_of_sample_results.md --json docs/out_of_sample.json`", ""]
    out += summary_table(rows) + ["", "### Per region (organ in view)", ""] + region_table(rows)
    out += ["", "### Trust thresholds per source (all atlases and suites pooled)", ""]
    out += threshold_tables(rows) + [
        "",
        "### Failing rows (cropped losing > 3 %, cropped although the organ is not "
        "in view, outside although it is, tracebacks)",
        "",
    ]
    out += failing_rows(rows) + ["", f"Meta: `{json.dumps(meta)}`"]
    return "\n".join(out)
