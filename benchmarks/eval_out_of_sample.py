"""Out-of-sample evaluation of the anatomy sources: leave-one-subject-out atlases, an acquisition-variety
suite and real head-neck scans, scored as the crop command writes them.

    python benchmarks/eval_out_of_sample.py [--quick] [--out docs/out_of_sample.md] [--json docs/out_of_sample.json]

Atlases ("contexts"):

* **in-sample**: the starter atlas and the built-in regions, built from both bundled subjects (the
  abdomen ``example_ct`` and the chest ``chest_ct``); every bundled case is in sample for it.
* **LOSO**: for each subject, the atlas and the regions rebuilt from the *other* subject alone (the
  starter has only two, so a leave-one-subject-out atlas is a one-subject atlas, its regions learned
  from that one subject; it covers only the other subject's field of view) and the subject's cases
  scored against them.

Cases: per subject its acquisition-variety suite (``nnunet_ctarr.evaluation.acquisitions``: slice
thickness 1-7.5 mm, pixels 0.5-4 mm, heart-centred / lungs-only / upper-abdomen / pelvis fields of
view, noise, arterial contrast, storage orientations, voxel types, array turns), for the chest built from
the native 0.7 x 0.7 x 2.5 mm scan; the abdomen's 30-slice crop and DICOM series; the three real
head-neck planning CTs of ``/work/shared/data/headneck_openkbp`` (no atlas subject shows a head: every
organ region there is "not in view"; they are read in place, never copied) and the synthetic head-neck
case of ``evaluation.hard_cases``.

Sources: the TotalSegmentator v2 map of the case (truth labels = the map); a mask folder (the same
structures as per-structure masks, but without the heart and kidney masks, as a folder lacking them
loads: those groups unobserved); the HU anatomy (``-anatomy_model hu``). Per region: organ voxels kept
as written (a trusted crop keeps what it keeps, an untrusted case is written whole), crop share,
trusted, and the trust rule's raw measures (registration Dice, region Dice, organ share, share outside
the atlas) to calibrate per-source thresholds. Seconds: anatomy + registration per case.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from nnunet_ctarr.core.anatomy.atlas import Atlas
from nnunet_ctarr.core.anatomy.groups import GROUPS, LabelScheme, group_of
from nnunet_ctarr.core.anatomy.hu_anatomy import hu_anatomy
from nnunet_ctarr.core.anatomy.masks import AnatomyMasks, load_anatomy
from nnunet_ctarr.core.anatomy.volume import anatomy_to_volume
from nnunet_ctarr.core.base.errors import CTARRError, LocalisationUntrusted, WarningLog
from nnunet_ctarr.core.base.geometry import Geometry
from nnunet_ctarr.core.base.images import match_label_to_image, read_image
from nnunet_ctarr.core.build.atlas_builder import build_atlas
from nnunet_ctarr.core.build.region_learning import learn_region
from nnunet_ctarr.core.localise import trust as T
from nnunet_ctarr.core.localise.localisation import locate, plan_region
from nnunet_ctarr.core.regions.cropping import crop_scores
from nnunet_ctarr.core.regions.region import builtin_regions, load_region
from nnunet_ctarr.evaluation.acquisitions import acquisition_suite
from nnunet_ctarr.evaluation.hard_cases import head_neck
from nnunet_ctarr.evaluation.perturbations import orientation_of
from nnunet_ctarr.evaluation.scores import roi_mask

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from build_starter_resources import MARGIN_MM, REGION_STRUCTURES, roi_from_labels  # noqa: E402

EXAMPLES, SHARED = ROOT / "examples" / "data", Path("/work/shared/data")
SCHEME = LabelScheme.named("ts_v2")
#: subject -> (image, labels) used for its cases, and the 3 mm labels its atlas is built from
SUBJECTS = {
    "chest": (
        ("chest_lidc/chest_ct.nii.gz", "chest_lidc/chest_ct_totalseg_v2.nii.gz"),
        "chest_lidc/chest_ct_3mm_totalseg_v2.nii.gz",
    ),
    "abdomen": (
        ("totalseg_example/example_ct.nii.gz", "totalseg_example/example_ct_totalseg_v2.nii.gz"),
        "totalseg_example/example_ct_totalseg_v2.nii.gz",
    ),
}
EXTRA = {
    "abdomen": {
        "30_slices": ("totalseg_example/example_ct_sm.nii.gz", "totalseg_example/example_ct_sm_totalseg_v2.nii.gz"),
        "dicom_20_slices": (
            "totalseg_example/example_ct_dicom",
            "totalseg_example/example_ct_dicom_totalseg_v2.nii.gz",
        ),
    }
}
SOURCES = ("totalsegmentator_map", "mask_folder", "hu", "hu_coarse")
#: the sources run by default ("hu_coarse": the HU anatomy labelled in the coarse pose, the alternative)
DEFAULT_SOURCES = ("totalsegmentator_map", "mask_folder", "hu")
#: structures a mask folder of the evaluation lacks (their groups become unobserved)
FOLDER_LACKS = ("heart", "kidney_left", "kidney_right", "kidney_cyst_left", "kidney_cyst_right")
IN_VIEW_ML, NOT_IN_VIEW_ML = 1.0, 0.5


@dataclass
class Context:
    name: str
    atlas: Atlas
    regions: list
    in_sample: bool


def data_file(rel: str) -> Path:
    """A data file from the shared folder when there (the native chest lives only there), else examples/."""
    for base in (SHARED, EXAMPLES):
        if (base / rel).exists():
            return base / rel
    return EXAMPLES / rel.replace("chest_ct.nii", "chest_ct_3mm.nii").replace(
        "chest_ct_totalseg", "chest_ct_3mm_totalseg"
    )


# ------------------------------------------------------------------ atlases
def loso_context(subject: str, tmp: Path) -> Context:
    """The atlas and regions rebuilt from every subject but ``subject`` (here: one subject)."""
    others = [s for s in SUBJECTS if s != subject]
    anat = {s: load_anatomy(data_file(SUBJECTS[s][1]), warnings=WarningLog()) for s in others}
    vols = [anatomy_to_volume(a) for a in anat.values()]
    if len(vols) == 1:  # build_atlas needs two scans: one subject twice is that subject
        vols, names = vols * 2, others * 2
    else:
        names = others
    atlas = build_atlas(vols, names, progress=False)
    atlas.save(tmp / f"atlas_without_{subject}.npz")
    atlas = Atlas.load(tmp / f"atlas_without_{subject}.npz")
    regions = []
    for name, structures in REGION_STRUCTURES.items():
        cases = [(s, anat[s], roi_from_labels(data_file(SUBJECTS[s][1]), structures)) for s in others]
        try:
            learned = learn_region(
                cases,
                atlas,
                name,
                margin_mm=MARGIN_MM,
                progress=False,
                provenance={"roi_structures_totalsegmentator_v2": structures},
            )
        except CTARRError:
            continue  # the organ is not in the remaining subject(s)
        regions.append(learned.region)
    return Context(f"LOSO (atlas from {', '.join(others)})", atlas, regions, False)


# ------------------------------------------------------------------ anatomy sources
def mask_folder_anatomy(labels, name: str) -> AnatomyMasks:
    """What ``load_mask_folder`` gives for a folder holding every structure mask of the map but
    :data:`FOLDER_LACKS` (checked against the real loader by :func:`check_mask_folder_equivalence`)."""
    anat = AnatomyMasks.from_label_image(labels, SCHEME, WarningLog(), name)
    present = {group_of(n) for n in SCHEME.names.values() if n not in FOLDER_LACKS} - {None}
    observed = np.array([g in present for g in GROUPS]) & anat.observed
    lab = sitk.GetArrayFromImage(anat.labels)
    lab[~observed[np.maximum(lab.astype(int) - 1, 0)] & (lab > 0)] = 0
    out = sitk.GetImageFromArray(lab)
    out.CopyInformation(anat.labels)
    return AnatomyMasks(out, observed, f"{name} (mask folder without {', '.join(FOLDER_LACKS)})")


def check_mask_folder_equivalence(tmp: Path) -> bool:
    """The in-memory mask folder equals ``load_mask_folder`` of a real folder (3 mm chest)."""
    lab = read_image(EXAMPLES / "chest_lidc/chest_ct_3mm_totalseg_v2.nii.gz")
    arr = sitk.GetArrayFromImage(lab)
    folder = tmp / "masks"
    folder.mkdir(exist_ok=True)
    for idx, n in SCHEME.names.items():
        if n not in FOLDER_LACKS and group_of(n) is not None:
            m = sitk.GetImageFromArray((arr == idx).astype(np.uint8))
            m.CopyInformation(lab)
            sitk.WriteImage(m, str(folder / f"{n}.nii.gz"))
    real, mem = load_anatomy(folder), mask_folder_anatomy(lab, "chest")
    return bool(
        np.array_equal(real.observed, mem.observed)
        and np.array_equal(sitk.GetArrayFromImage(real.labels), sitk.GetArrayFromImage(mem.labels))
    )


def anatomy(source: str, image, labels, atlas: Atlas, name: str) -> AnatomyMasks:
    if source == "totalsegmentator_map":
        return AnatomyMasks.from_label_image(labels, SCHEME, WarningLog(), name)
    if source == "mask_folder":
        return mask_folder_anatomy(labels, name)
    return hu_anatomy(image, atlas, WarningLog(), name, refine=source == "hu")


# ------------------------------------------------------------------ scoring
def group_agreement(anat: AnatomyMasks, labels) -> float | None:
    """Mean Dice, over the groups the HU anatomy labels and the TotalSegmentator map shows, between
    the HU group map and the map's groups (nearest neighbour on the HU grid)."""
    ts = AnatomyMasks.from_label_image(labels, SCHEME, WarningLog(), "truth").labels
    ts = sitk.GetArrayFromImage(
        sitk.Resample(ts, anat.labels, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    )
    hu = sitk.GetArrayFromImage(anat.labels)
    out = []
    for g in np.nonzero(anat.observed)[0] + 1:
        a, b = hu == g, ts == g
        if b.sum() * float(np.prod(anat.labels.GetSpacing())) >= 5000.0:  # groups with >= 5 ml in view
            out.append(2 * float((a & b).sum()) / float(a.sum() + b.sum()))
    return float(np.mean(out)) if out else None


def in_view_measures(loc, atlas: Atlas, region, plan, image) -> dict:
    """For the organ-in-view rule (issue 21, item 5): the share of the atlas' probability mass of the
    region's organ groups that maps into the image, and the share of the region's boxes (with
    margin) inside it."""
    geo = Geometry.of(image)
    size = np.array(geo.size_xyz)
    groups = [t for t in T.target_groups(region) if atlas.observed[t]]
    out = {"atlas_organ_in_view": None}
    if groups:
        p = atlas.prob[groups].sum(0)
        zyx = np.argwhere(p > 0.05)
        w = p[tuple(zyx.T)]
        idx = geo.world_to_index(loc.transform.to_world(atlas.origin + zyx[:, ::-1] * atlas.spacing))
        inside = np.all((idx > -0.5) & (idx < size - 0.5), 1)
        out["atlas_organ_in_view"] = float(w[inside].sum() / w.sum())
    vol = [float(np.prod(b.full_stop_xyz - b.full_start_xyz)) for b in plan.boxes]
    out["box_in_view"] = float(sum(v * b.fraction_inside for v, b in zip(vol, plan.boxes)) / max(sum(vol), 1.0))
    return out


def score(ctx: Context, suite: str, case: str, image, labels, R: np.ndarray, source: str) -> list[dict]:
    """One row per region of the context, as the crop command writes it (``--on_untrusted whole``)."""
    base = {"context": ctx.name, "suite": suite, "case": case, "source": source}
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        anat = anatomy(source, image, labels, ctx.atlas, case)
        loc = locate(image, anat, ctx.atlas, None, WarningLog())
    except LocalisationUntrusted as e:
        loc, refused = None, str(e)
    except CTARRError as e:
        return [{**base, "region": "(all)", "failed": str(e), "seconds": time.perf_counter() - t0}]
    except Exception as e:  # noqa: BLE001 - counted: the acceptance is 0 tracebacks
        return [
            {
                **base,
                "region": "(all)",
                "traceback": f"{type(e).__name__}: {e}",
                "where": traceback.format_exc().splitlines()[-3:],
                "seconds": time.perf_counter() - t0,
            }
        ]
    case_m = {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}
    if source.startswith("hu") and labels is not None:
        case_m["group_dice_vs_ts"] = group_agreement(anat, labels)
    if loc is not None:
        M = np.rint(loc.transform.M).astype(int)
        case_m.update(
            orientation_ok=bool(np.array_equal(M, orientation_of(R))), registration_dice=float(loc.registration.dice)
        )
    rows = []
    vox_ml = float(np.prod(labels.GetSpacing())) / 1000.0 if labels is not None else 0.0
    for region in ctx.regions:
        structures = region.provenance.get("roi_structures_totalsegmentator_v2", [])
        fg = roi_mask(labels, SCHEME, structures) if labels is not None else None
        row = {
            **base,
            **case_m,
            "region": region.name,
            "organ_ml": float(fg.sum()) * vox_ml if fg is not None else None,
        }
        if loc is None:
            rows.append({**row, "trusted": False, "usable": True, "reasons": refused, "kept": 100.0, "crop_share": 1.0})
            continue
        plan = plan_region(image, loc, region, warnings=WarningLog())
        row.update(in_view_measures(loc, ctx.atlas, region, plan, image))
        if not plan.usable:
            rows.append(
                {
                    **row,
                    "usable": False,
                    "trusted": False,
                    "reasons": "outside the field of view",
                    "kept": 0.0 if fg is not None and fg.any() else None,
                    "crop_share": 0.0,
                }
            )
            continue
        trust = T.assess(loc, ctx.atlas, region, plan, image)
        cs = crop_scores(fg, plan.union_mask_zyx()) if fg is not None else {}
        kept_if = cs.get("preserved_percent")
        rows.append(
            {
                **row,
                **trust.measures,
                "usable": True,
                "trusted": trust.trusted,
                "reasons": trust.text(),
                "kept_if_cropped": kept_if,
                "kept": kept_if if trust.trusted else (100.0 if kept_if is not None else None),
                "crop_share_if_cropped": cs.get("crop_voxel_fraction"),
                "crop_share": cs.get("crop_voxel_fraction", 0.0) if trust.trusted else 1.0,
            }
        )
    return rows


def cases(subject: str, quick: bool):
    """(suite, case, image, labels, R) of a subject: its acquisition suite and its extra scans."""
    img_f, lab_f = SUBJECTS[subject][0]
    image, labels = read_image(data_file(img_f)), read_image(data_file(lab_f))
    for p in acquisition_suite(image, labels, thick=not quick):
        yield "acquisition", f"{subject}/{p.name}", p.image, p.labels, p.R
    for name, (i, lab) in EXTRA.get(subject, {}).items():
        img = read_image(data_file(i))
        yield "acquisition", f"{subject}/{name}", img, match_label_to_image(read_image(data_file(lab)), img), np.eye(3)


def head_neck_cases():
    """The real head-neck scans (no labels: every organ is out of view) and the synthetic one."""
    for pt in sorted((SHARED / "headneck_openkbp").glob("pt_*")):
        yield "head-neck", f"openkbp_{pt.name}", read_image(pt / "ct.nii.gz"), None, np.eye(3)
    chest = read_image(EXAMPLES / "chest_lidc/chest_ct_3mm.nii.gz")
    lab = read_image(EXAMPLES / "chest_lidc/chest_ct_3mm_totalseg_v2.nii.gz")
    img, hl = head_neck(chest, lab, neck_mm=60)
    yield "head-neck", "synthetic_head_neck_60mm", img, hl, np.eye(3)


def run(
    quick: bool, tmp: Path, sources: tuple[str, ...] = DEFAULT_SOURCES, loso: bool = True
) -> tuple[list[dict], dict]:
    torch.set_num_threads(2)
    starter = Context(
        "in-sample (starter atlas)", Atlas.load(), [load_region(str(p)) for p in builtin_regions().values()], True
    )
    meta = {"mask_folder_equivalent_to_loader": check_mask_folder_equivalence(tmp)}
    rows: list[dict] = []
    for subject in SUBJECTS:
        contexts = [starter]
        if loso:
            contexts.append(loso_context(subject, tmp))
            meta[contexts[1].name] = {
                "regions": [r.name for r in contexts[1].regions],
                "atlas_groups": contexts[1].atlas.group_span(),
            }
        for suite, case, image, labels, R in cases(subject, quick):
            for ctx in contexts:
                for source in sources:
                    rows += score(ctx, suite, case, image, labels, R, source)
            print(f"{subject}: {case}", file=sys.stderr)
    for suite, case, image, labels, R in head_neck_cases():
        for source in sources if labels is not None else [s for s in sources if s.startswith("hu")]:
            rows += score(starter, suite, case, image, labels, R, source)
        print(f"head-neck: {case}", file=sys.stderr)
    return rows, meta


# ------------------------------------------------------------------ summaries
def in_view(r: dict) -> bool:
    return r.get("organ_ml") is not None and r["organ_ml"] >= IN_VIEW_ML


def not_in_view(r: dict) -> bool:
    """No truth (real head-neck scans: none of the regions' organs) or less than 0.5 ml of the organ."""
    return r["region"] != "(all)" and (r.get("organ_ml") is None or r["organ_ml"] < NOT_IN_VIEW_ML)


def summary(rows: list[dict]) -> dict:
    by_case = {}
    for r in rows:
        by_case.setdefault(r["case"], r)
    cells = [r for r in rows if in_view(r) and r.get("kept") is not None]
    cropped = [r for r in cells if r.get("usable")]
    orient = [r["orientation_ok"] for r in by_case.values() if "orientation_ok" in r]
    return {
        "cases": len(by_case),
        "tracebacks": sum("traceback" in r for r in by_case.values()),
        "failed": sum("failed" in r for r in by_case.values()),
        "orientation_right": sum(orient),
        "orientation_wrong": len(orient) - sum(orient),
        "regions_in_view": len(cells),
        "kept_mean": float(np.mean([r["kept"] for r in cells])) if cells else None,
        "kept_min": float(np.min([r["kept"] for r in cells])) if cells else None,
        "crop_share_mean": float(np.mean([r["crop_share"] for r in cropped])) if cropped else None,
        "trusted_rate": float(np.mean([r["trusted"] for r in cropped])) if cropped else None,
        "trusted_losing_3pct": [
            f"{r['case']}:{r['region']} {r['kept']:.1f}%"
            for r in cells
            if r["trusted"] and r["kept"] is not None and r["kept"] < 97.0
        ],
        "trusted_not_in_view": [f"{r['case']}:{r['region']}" for r in rows if r.get("trusted") and not_in_view(r)],
        "seconds_median": float(np.median([r["seconds"] for r in by_case.values()])),
        "group_dice_median": float(np.median(gd))
        if (gd := [r["group_dice_vs_ts"] for r in by_case.values() if r.get("group_dice_vs_ts") is not None])
        else None,
    }


def groups_of(rows: list[dict]):
    keys = sorted(
        {(r["context"], r["suite"], r["source"]) for r in rows}, key=lambda k: (k[0], k[1], SOURCES.index(k[2]))
    )
    for k in keys:
        yield k, [r for r in rows if (r["context"], r["suite"], r["source"]) == k]


def _other_reasons(r: dict) -> bool:
    """Whether the verdict has reasons besides the two Dice thresholds (outside the atlas, organ rules)."""
    return any("Dice" not in part for part in (r.get("reasons") or "").split("; ") if part)


def calibrate(rows: list[dict], source: str) -> dict:
    """The registration-Dice and region-Dice thresholds that trust no bad crop (organ in view but a
    wrong orientation, or > 3 % of the organ lost) and the most good ones, the other rules kept.
    Crops of organs not in view are the organ-in-view rule's (:func:`calibrate_in_view`)."""
    cells = [r for r in rows if r["source"] == source and r.get("usable") and "registration_dice" in r]
    good = [r for r in cells if in_view(r) and r["orientation_ok"] and (r.get("kept_if_cropped") or 0) >= 97.0]
    bad = [r for r in cells if in_view(r) and (not r["orientation_ok"] or (r.get("kept_if_cropped") or 0) < 97.0)]

    def trusted(r, a, b):
        rd = r.get("region_dice")
        return r["registration_dice"] >= a and (rd is None or rd >= b) and not _other_reasons(r)

    best = None
    for a in np.round(np.arange(0.05, 0.61, 0.01), 2):
        for b in np.round(np.arange(0.0, 0.61, 0.02), 2):
            nb, ng = sum(trusted(r, a, b) for r in bad), sum(trusted(r, a, b) for r in good)
            key = (-nb, ng, -abs(a - T.MIN_PLAUSIBLE_DICE) - abs(b - T.MIN_REGION_DICE))
            if best is None or key > best[0]:
                best = (key, float(a), float(b), nb, ng)
    cur = (
        sum(trusted(r, T.MIN_PLAUSIBLE_DICE, T.MIN_REGION_DICE) for r in bad),
        sum(trusted(r, T.MIN_PLAUSIBLE_DICE, T.MIN_REGION_DICE) for r in good),
    )
    span = lambda xs: [round(min(xs), 3), round(max(xs), 3)] if xs else None  # noqa: E731
    return {
        "good": len(good),
        "bad": len(bad),
        "registration_dice_good": span([r["registration_dice"] for r in good]),
        "registration_dice_bad": span([r["registration_dice"] for r in bad]),
        "region_dice_good": span([r["region_dice"] for r in good if r.get("region_dice") is not None]),
        "region_dice_bad": span([r["region_dice"] for r in bad if r.get("region_dice") is not None]),
        "current": {
            "min_plausible_dice": T.MIN_PLAUSIBLE_DICE,
            "min_region_dice": T.MIN_REGION_DICE,
            "bad_trusted": cur[0],
            "good_trusted": cur[1],
        },
        "proposed": {
            "min_plausible_dice": best[1],
            "min_region_dice": best[2],
            "bad_trusted": best[3],
            "good_trusted": best[4],
        },
        "bad_cases": sorted({f"{r['case']}:{r['region']}" for r in bad if trusted(r, best[1], best[2])}),
    }


def calibrate_in_view(rows: list[dict], source: str, measure: str) -> dict:
    """How well ``measure`` (the atlas organ's share mapped into the image, or the region boxes'
    share inside it) tells regions whose organ is in view (>= 1 ml) from those whose organ is not
    (< 0.5 ml, or none in a head-neck scan): the threshold that passes no organ-less region and the
    most in-view ones, among the crops the current rule trusts."""
    cells = [r for r in rows if r["source"] == source and r.get("trusted") and r.get(measure) is not None]
    yes, no = [r[measure] for r in cells if in_view(r)], [r[measure] for r in cells if not_in_view(r)]
    if not yes or not no:
        return {}
    t = min(1.0, max(no) + 0.01)
    return {
        "in_view": len(yes),
        "not_in_view": len(no),
        "in_view_range": [round(min(yes), 3), round(max(yes), 3)],
        "not_in_view_range": [round(min(no), 3), round(max(no), 3)],
        "threshold": round(t, 2),
        "in_view_passing": sum(v >= t for v in yes),
        "in_view_below": {
            q: [round(r["organ_ml"], 1) for r in cells if in_view(r) and r[measure] < q] for q in (0.1, 0.25, 0.5)
        },
    }


def fmt(v, f=".2f") -> str:
    return "" if v is None else format(v, f)


def markdown(rows: list[dict], meta: dict, command: str) -> str:
    out = [
        f"Regenerate: `{command}`",
        "",
        "| atlas | suite | source | cases | tracebacks / failed | orientation right / wrong | regions in view | "
        "kept mean / min % | crop share | trusted | trusted losing > 3 % | trusted, organ not in view | s / case | "
        "HU groups vs TS (Dice) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (ctx, suite, src), rs in groups_of(rows):
        s = summary(rs)
        out.append(
            f"| {ctx} | {suite} | {src} | {s['cases']} | {s['tracebacks']} / {s['failed']} | "
            f"{s['orientation_right']} / {s['orientation_wrong']} | {s['regions_in_view']} | "
            f"{fmt(s['kept_mean'])} / {fmt(s['kept_min'])} | "
            f"{fmt(s['crop_share_mean'] and 100 * s['crop_share_mean'], '.1f')}% | "
            f"{fmt(s['trusted_rate'] and 100 * s['trusted_rate'], '.0f')}% | {len(s['trusted_losing_3pct'])} | "
            f"{len(s['trusted_not_in_view'])} | {s['seconds_median']:.2f} | {fmt(s['group_dice_median'])} |"
        )
    out += [
        "",
        "### Trust thresholds per source (all contexts and suites pooled)",
        "",
        "| source | good / bad crops | registration Dice good / bad | region Dice good / bad | now: bad / good "
        "trusted | proposed MIN_PLAUSIBLE_DICE, MIN_REGION_DICE | then: bad / good trusted |",
        "|---|---|---|---|---|---|---|",
    ]
    for src in SOURCES:
        c = calibrate(rows, src)
        if not c["good"] and not c["bad"]:
            continue
        out.append(
            f"| {src} | {c['good']} / {c['bad']} | {c['registration_dice_good']} / {c['registration_dice_bad']} | "
            f"{c['region_dice_good']} / {c['region_dice_bad']} | {c['current']['bad_trusted']} / "
            f"{c['current']['good_trusted']} | {c['proposed']['min_plausible_dice']}, "
            f"{c['proposed']['min_region_dice']} | {c['proposed']['bad_trusted']} / {c['proposed']['good_trusted']} |"
        )
    out += [
        "",
        "### Organ in view (for the organ-in-view rule; crops the other rules trust)",
        "",
        "| source | measure | in view / not | range in view | range not in view | threshold | in view passing | "
        "in view below 0.1 / 0.25 / 0.5 (their organ ml) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for src in SOURCES:
        for measure in ("atlas_organ_in_view", "box_in_view"):
            c = calibrate_in_view(rows, src, measure)
            if c:
                out.append(
                    f"| {src} | {measure} | {c['in_view']} / {c['not_in_view']} | {c['in_view_range']} | "
                    f"{c['not_in_view_range']} | {c['threshold']} | {c['in_view_passing']} | "
                    + " / ".join(f"{len(v)} ({max(v) if v else 0:.0f})" for v in c["in_view_below"].values())
                    + " |"
                )
    out += [
        "",
        "### Failing rows",
        "",
        "| atlas | source | case | region | organ ml | kept % (if cropped) | reg. Dice | "
        "region Dice | organ share | trusted | reasons / error |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        bad = (
            "traceback" in r
            or (r.get("trusted") and ((in_view(r) and r["kept"] < 97.0) or not_in_view(r)))
            or ("orientation_ok" in r and not r["orientation_ok"] and r.get("trusted"))
        )
        if bad:
            out.append(
                f"| {r['context']} | {r['source']} | {r['case']} | {r['region']} | {fmt(r.get('organ_ml'), '.0f')} | "
                f"{fmt(r.get('kept_if_cropped'), '.1f')} | {fmt(r.get('registration_dice'))} | "
                f"{fmt(r.get('region_dice'))} | {fmt(r.get('organ_share_in_crop'))} | {r.get('trusted')} | "
                f"{r.get('reasons') or r.get('traceback') or r.get('failed')} |"
            )
    out += ["", f"Meta: `{json.dumps(meta)}`"]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="skip the voxel-size variants (the slow ones)")
    ap.add_argument("--out", default=None, help="markdown tables (e.g. docs/out_of_sample_results.md)")
    ap.add_argument("--json", default=None, help="every row as JSON")
    ap.add_argument("--sources", nargs="+", default=list(SOURCES), choices=SOURCES)
    ap.add_argument("--no_loso", action="store_true", help="only the in-sample atlas (development)")
    ap.add_argument("--from_json", default=None, help="only write the tables of an earlier run's JSON")
    args = ap.parse_args()
    if args.from_json:
        data = json.loads(Path(args.from_json).read_text())
        rows, meta, command = data["rows"], data["meta"], data["command"]
    else:
        with tempfile.TemporaryDirectory() as tmp:
            rows, meta = run(args.quick, Path(tmp), tuple(args.sources), not args.no_loso)
        command = "python benchmarks/eval_out_of_sample.py" + (" --quick" if args.quick else "")
        command += "" if args.sources == list(SOURCES) else " --sources " + " ".join(args.sources)
        command += " --no_loso" if args.no_loso else ""
    if args.json and not args.from_json:
        compact = [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in rows]
        Path(args.json).write_text(json.dumps({"command": command, "meta": meta, "rows": compact}, default=float))
    text = markdown(rows, meta, command)
    print(text)
    if args.out:
        Path(args.out).write_text("# Out-of-sample evaluation: results\n\n" + text + "\n")


if __name__ == "__main__":
    main()
