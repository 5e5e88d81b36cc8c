"""The CTARR paper's Table 2 on labelled scans (``nnUNetv2_ctarr_evaluate``): one row per case and
region, the rows worst first, ``summary.md`` per region, QC pictures of the worst cases.

Per scan one image read, one label read, one anatomy load and one registration serve every region.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core.anatomy.atlas import Atlas
from ..core.base.cases import case_id
from ..core.base.errors import CTARRError, WarningLog, quiet_warnings
from ..core.base.geometry import Geometry
from ..core.base.images import match_label_to_image, read_image
from ..core.localise.decision import Located, Policy, Status, decide, decide_region, locate_case
from ..core.localise.localisation import locate, plan_region
from ..core.outputs.qc import picture_name, render_qc
from ..core.regions.cropping import crop_scores
from ..core.regions.region import Region
from .scores import orientation_check

FIELDS = ["case", "region", "preserved_fg_percent", "fg_voxels", "fg_share_before_percent",
          "fg_share_after_percent", "voxel_reduction", "ctarr_seconds", "orientation", "known_perturbation",
          "expected_orientation", "orientation_correct", "registration_dice", "trusted", "trust_reasons", "status",
          "warnings", "error"]
#: every status a row can have (the one vocabulary of core.localise.decision), clean first
STATUSES = tuple(s.value for s in Status)


@dataclass(frozen=True)
class EvalSettings:
    """What every case of an evaluation shares: the extra margin and fallback (``policy``: the
    status says what a writer would do) and the foreground labels."""
    policy: Policy = Policy()
    label_ids: tuple[int, ...] | None = None     # foreground label values (None: every label > 0)


def evaluate_case(img_path: Path, lab_path: Path, anatomy_source, regions: list[Region], atlas: Atlas,
                  settings: EvalSettings, known: dict | None = None) -> list[dict]:
    """The rows of one labelled scan, one per region (user errors raise). The boxes are scored
    whatever the decision; the status says what a writer would do with them."""
    case = case_id(img_path)
    warnings = WarningLog(case=case)
    image, fg = _read_case(img_path, lab_path, settings)
    t0 = time.perf_counter()
    located = locate_case(image, anatomy_source.load(case, warnings), atlas, warnings=warnings)
    shared = time.perf_counter() - t0
    if located.localisation is None:      # refused before registration: nothing to score
        d = decide(located, regions, atlas, image, settings.policy, case)
        return [{"case": case, "region": r.region.name, "trusted": False, "trust_reasons": r.trust.text(),
                 "status": r.status.value, "warnings": " | ".join([*warnings, *r.warnings])} for r in d]
    return [_region_row(case, image, fg, located, r, atlas, settings, known, shared, warnings) for r in regions]


def _read_case(img_path: Path, lab_path: Path, settings: EvalSettings) -> tuple[sitk.Image, np.ndarray]:
    """The image and the foreground mask (z, y, x) of its label map."""
    image = read_image(img_path)
    labels = match_label_to_image(read_image(lab_path), image, f"labels {lab_path.name}")
    lab = sitk.GetArrayViewFromImage(labels)
    return image, (np.isin(lab, settings.label_ids) if settings.label_ids else lab > 0)


def _region_row(case: str, image: sitk.Image, fg: np.ndarray, located: Located, region: Region, atlas: Atlas,
                settings: EvalSettings, known: dict | None, shared_seconds: float, case_warnings: WarningLog) -> dict:
    """Decide and score one region of a located scan."""
    t0 = time.perf_counter()
    d = decide_region(located, region, atlas, Geometry.of(image), settings.policy, case)
    loc, plan = located.localisation, d.plan
    secs = shared_seconds + time.perf_counter() - t0
    sc = crop_scores(fg, plan.union_mask_zyx())
    return {
        "case": case,
        "region": region.name,
        "preserved_fg_percent": "" if sc["preserved_percent"] is None else round(sc["preserved_percent"], 3),
        "fg_voxels": sc["fg_voxels"],
        "fg_share_before_percent": round(sc["fg_share_before"], 4),
        "fg_share_after_percent": round(sc["fg_share_after"], 4),
        "voxel_reduction": round(1.0 / max(sc["crop_voxel_fraction"], 1.0 / fg.size), 3),
        "ctarr_seconds": round(secs, 3),
        "orientation": loc.transform.orientation_text,
        **orientation_check(loc.transform.M, known),
        "registration_dice": round(loc.registration.dice, 3),
        "trusted": d.trusted,
        "trust_reasons": d.trust.text() or d.why,
        "status": d.status.value,
        "warnings": " | ".join([*case_warnings, *d.warnings]),
    }


def failed_rows(case: str, regions: list[Region], message: str) -> list[dict]:
    return [{"case": case, "region": r.name, "status": Status.FAILED.value, "error": message} for r in regions]


def _scored(row: dict) -> bool:
    return row.get("preserved_fg_percent") not in ("", None)


def sort_rows(rows: list[dict], regions: list[Region]) -> list[dict]:
    """By region (in ``-r`` order), worst first: a wrong orientation, then the least foreground
    preserved; rows without foreground or failed last; ties by case."""
    order = {r.name: i for i, r in enumerate(regions)}
    return sorted(rows, key=lambda r: (order.get(r["region"], len(order)), not _scored(r),
                                       r.get("orientation_correct") is not False,
                                       float(r["preserved_fg_percent"]) if _scored(r) else 101.0, r["case"]))


def summary(rows: list[dict], region: str, images: str) -> list[str]:
    """summary.md's section of one region: the Table 2 means, the known-perturbation count, the
    worst cases."""
    rows = [r for r in rows if r["region"] == region]
    ok = [r for r in rows if _scored(r)]
    failed = [r for r in rows if r["status"] == Status.FAILED.value]
    md = [f"# CTARR evaluation: region `{region}` on `{images}`", "",
          f"Cases: {len(rows)} ({len(ok)} with foreground, {len(rows) - len(ok)} without or failed"
          + (f"; failed: {', '.join(r['case'] for r in failed)}" if failed else "") + ")", ""]
    if not ok:
        return md
    col = lambda k: np.array([float(r[k]) for r in ok])
    md += ["| preserved foreground | foreground before | foreground after | voxel reduction | CTARR s (median) |",
           "|---|---|---|---|---|",
           f"| {col('preserved_fg_percent').mean():.2f}% (min {col('preserved_fg_percent').min():.2f}%) | "
           f"{col('fg_share_before_percent').mean():.3f}% | {col('fg_share_after_percent').mean():.3f}% | "
           f"{col('voxel_reduction').mean():.2f}x | {np.median(col('ctarr_seconds')):.2f} |", ""]
    untrusted = [r for r in rows if r.get("trusted") is False]
    lossy = [r for r in ok if r.get("trusted") and float(r["preserved_fg_percent"]) < 97.0]
    md += [f"Untrusted (a writer falls back: --on_untrusted): {len(untrusted)}; trusted crops losing > 3% of the "
           f"foreground: {len(lossy)}" + (f" ({', '.join(r['case'] for r in lossy)})" if lossy else ""), ""]
    checked = [r for r in ok if r.get("orientation_correct") != ""]
    if checked:
        right = sum(r["orientation_correct"] is True for r in checked)
        md += [f"Known perturbations: orientation right in {right} of {len(checked)} scans", ""]
    md += ["Worst cases:", "", "| case | preserved | orientation found | known perturbation | right | Dice | trusted "
           "| status |", "|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['case']} | {r['preserved_fg_percent']}% | {r['orientation']} | {r.get('known_perturbation', '')} | "
           f"{ {True: 'yes', False: '**NO**', '': ''}[r.get('orientation_correct', '')] } | "
           f"{r['registration_dice']} | {'yes' if r['trusted'] else '**no**'} | {r['status']} |" for r in ok[:10]]
    return md


def worst_rows(rows: list[dict], regions: list[Region], n: int) -> dict[str, list[dict]]:
    """Case -> its rows among the ``n`` worst scored rows of each region (rows sorted worst first)."""
    by_case: dict[str, list[dict]] = {}
    for region in regions:
        for r in [r for r in rows if r["region"] == region.name and _scored(r)][:n]:
            by_case.setdefault(r["case"], []).append(r)
    return by_case


def draw_worst(out: Path, picked: dict[str, list[dict]], inputs: dict[str, Path], anatomy_source,
               regions: list[Region], atlas: Atlas, settings: EvalSettings) -> list[Path]:
    """QC pictures ``<case>_<region>_qc.png`` of the rows of :func:`worst_rows`; each case is
    localised again, once for all its regions (a case that fails now is logged and left out)."""
    by_name, written = {r.name: r for r in regions}, []
    for case, rows in picked.items():
        try:
            with quiet_warnings():        # the case's warnings are in its rows already
                image = read_image(inputs[case])
                loc = locate(image, anatomy_source.load(case, WarningLog()), atlas, warnings=WarningLog())
                for r in rows:
                    plan = plan_region(image, loc, by_name[r["region"]], settings.policy.margin_mm,
                                       warnings=WarningLog())
                    written.append(out / picture_name(case, r["region"]))
                    render_qc(written[-1], image, loc.anatomy_volume, plan,
                              f"{case} | {r['region']} | preserved {r['preserved_fg_percent']}%")
        except CTARRError as e:
            WarningLog(case=case).warn(f"no QC picture: {e}")
    return written
