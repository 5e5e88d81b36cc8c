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
from out_of_sample_report import markdown

from nnunet_ctarr.core.anatomy.atlas import Atlas
from nnunet_ctarr.core.anatomy.groups import GROUPS, LabelScheme, group_of
from nnunet_ctarr.core.anatomy.hu_anatomy import hu_anatomy
from nnunet_ctarr.core.anatomy.masks import AnatomyMasks, load_anatomy
from nnunet_ctarr.core.anatomy.volume import anatomy_to_volume
from nnunet_ctarr.core.base.errors import CTARRError, WarningLog
from nnunet_ctarr.core.base.images import match_label_to_image, read_image
from nnunet_ctarr.core.build.atlas_builder import build_atlas
from nnunet_ctarr.core.build.region_learning import learn_region
from nnunet_ctarr.core.localise.decision import Policy, Status, decide, locate_case
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
SOURCES = ("totalsegmentator_map", "mask_folder", "hu", "hu_coarse")  # as out_of_sample_report.SOURCES
#: the sources run by default ("hu_coarse": the HU anatomy labelled in the coarse pose, the alternative)
DEFAULT_SOURCES = ("totalsegmentator_map", "mask_folder", "hu")
#: structures a mask folder of the evaluation lacks (their groups become unobserved)
FOLDER_LACKS = ("heart", "kidney_left", "kidney_right", "kidney_cyst_left", "kidney_cyst_right")


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


def score(ctx: Context, suite: str, case: str, image, labels, R: np.ndarray, source: str) -> list[dict]:
    """One row per region of the context, as the crop command decides it (``decide``, the one
    decision of every writer; ``--on_untrusted whole``): organ voxels kept as written (cropped: what
    the crop keeps; untrusted: the whole image, 100 %; outside the field of view: nothing, 0 % of an
    organ that is in view), the crop share, and the trust rule's measures."""
    base = {"context": ctx.name, "suite": suite, "case": case, "source": source}
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        anat = anatomy(source, image, labels, ctx.atlas, case)
        located = locate_case(image, anat, ctx.atlas, None, WarningLog())
    except CTARRError as e:
        return [{**base, "region": "(all)", "failed": str(e), "seconds": time.perf_counter() - t0}]
    except Exception as e:  # noqa: BLE001 - counted: the acceptance is 0 tracebacks
        where = traceback.format_exc().splitlines()[-3:]
        return [
            {
                **base,
                "region": "(all)",
                "traceback": f"{type(e).__name__}: {e}",
                "where": where,
                "seconds": time.perf_counter() - t0,
            }
        ]
    case_m = {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}
    if source.startswith("hu") and labels is not None:
        case_m["group_dice_vs_ts"] = group_agreement(anat, labels)
    loc = located.localisation
    if loc is not None:
        M = np.rint(loc.transform.M).astype(int)
        case_m.update(
            orientation_ok=bool(np.array_equal(M, orientation_of(R))), registration_dice=float(loc.registration.dice)
        )
    vox_ml = float(np.prod(labels.GetSpacing())) / 1000.0 if labels is not None else 0.0
    rows = []
    for d in decide(located, ctx.regions, ctx.atlas, image, Policy("whole")):
        structures = d.region.provenance.get("roi_structures_totalsegmentator_v2", [])
        fg = roi_mask(labels, SCHEME, structures) if labels is not None else None
        cs = crop_scores(fg, d.plan.union_mask_zyx()) if fg is not None and d.plan and d.plan.usable else {}
        kept_if = cs.get("preserved_percent")
        has_organ = fg is not None and bool(fg.any())
        kept = {
            Status.CROPPED: kept_if,
            Status.WHOLE: 100.0 if has_organ else None,
            Status.OUTSIDE: 0.0 if has_organ else None,
        }[d.status]
        rows.append(
            {
                **base,
                **case_m,
                **d.trust.rounded_measures(),
                "region": d.region.name,
                "organ_ml": float(fg.sum()) * vox_ml if fg is not None else None,
                "status": str(d.status),
                "trusted": d.status is Status.CROPPED,
                "usable": bool(d.plan and d.plan.usable),
                "reasons": d.trust.text() or d.why,
                "kept_if_cropped": kept_if,
                "kept": kept,
                "crop_share_if_cropped": cs.get("crop_voxel_fraction"),
                "crop_share": {
                    Status.CROPPED: cs.get("crop_voxel_fraction", 0.0),
                    Status.WHOLE: 1.0,
                    Status.OUTSIDE: 0.0,
                }[d.status],
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


def pack_rows(rows: list[dict]) -> dict:
    """Rows as a column list and value lists, floats to 4 digits, the strings of string columns stored
    once (the JSON of a full run: well under 1 MB instead of 2.5)."""
    columns = sorted({k for r in rows for k in r})
    text = sorted({c for r in rows for c, v in r.items() if isinstance(v, str)})
    strings: dict[str, int] = {}

    def enc(c, v):
        if v is None:
            return None
        if c in text and isinstance(v, str):
            return strings.setdefault(v, len(strings))
        return round(v, 4) if isinstance(v, float) else v

    return {
        "columns": columns,
        "string_columns": text,
        "strings": None,
        "rows": [[enc(c, r.get(c)) for c in columns] for r in rows],
        "string_table": strings,
    }


def unpack_rows(data: dict) -> list[dict]:
    """The rows of :func:`pack_rows`'s JSON (or of an older run that stored them as dicts)."""
    if "columns" not in data:
        return data["rows"]
    strings, text = data["strings"], set(data["string_columns"])
    return [
        {c: strings[v] if c in text else v for c, v in zip(data["columns"], row) if v is not None}
        for row in data["rows"]
    ]


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
        rows, meta, command = unpack_rows(data), data["meta"], data["command"]
    else:
        with tempfile.TemporaryDirectory() as tmp:
            rows, meta = run(args.quick, Path(tmp), tuple(args.sources), not args.no_loso)
        command = "python benchmarks/eval_out_of_sample.py" + (" --quick" if args.quick else "")
        command += "" if args.sources == list(SOURCES) else " --sources " + " ".join(args.sources)
        command += " --no_loso" if args.no_loso else ""
    if args.json and not args.from_json:
        packed = pack_rows(rows)
        packed["strings"] = list(packed.pop("string_table"))
        Path(args.json).write_text(json.dumps({"command": command, "meta": meta, **packed}, default=float))
    text = markdown(rows, meta, command)
    print(text)
    if args.out:
        Path(args.out).write_text("# Out-of-sample evaluation: results\n\n" + text + "\n")


if __name__ == "__main__":
    main()
