"""Rebuild the starter atlas and the built-in regions from the bundled real subjects.

    python scripts/build_starter_resources.py [--data examples/data]

Writes ``nnunet_ctarr/resources/atlas_ctarr_starter.npz`` and ``region_defs/<region>.json``.
The two subjects are the TotalSegmentator example CT (abdomen-pelvis) and the LIDC chest CT,
both with TotalSegmentator v2 labels; see examples/data/PROVENANCE.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_ctarr.core.anatomy.atlas import Atlas
from nnunet_ctarr.core.anatomy.groups import totalsegmentator_scheme
from nnunet_ctarr.core.anatomy.masks import load_anatomy
from nnunet_ctarr.core.anatomy.volume import anatomy_to_volume
from nnunet_ctarr.core.base.errors import WarningLog
from nnunet_ctarr.core.build.atlas_builder import build_atlas
from nnunet_ctarr.core.build.region_learning import learn_region

ROOT = Path(__file__).resolve().parents[1]
SUBJECTS = {
    "example_ct": "totalseg_example/example_ct_totalseg_v2.nii.gz",
    "chest_ct_3mm": "chest_lidc/chest_ct_3mm_totalseg_v2.nii.gz",
}
#: two subjects cannot show the population's anatomical variation, so the starter regions use
#: a 20 mm margin instead of the paper's 10 mm (see docs/regions.md for the measurement)
MARGIN_MM = 20.0
#: region name -> TotalSegmentator v2 structure names forming its ROI (paper's 12 regions
#: minus brain: neither subject shows the head)
REGION_STRUCTURES = {
    "kidneys": ["kidney_left", "kidney_right", "kidney_cyst_left", "kidney_cyst_right"],
    "liver": ["liver"],
    "spleen": ["spleen"],
    "pancreas": ["pancreas"],
    "gallbladder": ["gallbladder"],
    "stomach": ["stomach"],
    "colon": ["colon"],
    "urinary_bladder": ["urinary_bladder"],
    "heart": ["heart"],
    "lungs": [
        "lung_upper_lobe_left",
        "lung_lower_lobe_left",
        "lung_upper_lobe_right",
        "lung_middle_lobe_right",
        "lung_lower_lobe_right",
    ],
    "spine": [f"vertebrae_{p}{i}" for p, n in (("C", 7), ("T", 12), ("L", 5)) for i in range(1, n + 1)]
    + ["vertebrae_S1", "sacrum"],
}


def roi_from_labels(label_file: Path, structures: list[str]) -> sitk.Image:
    names = totalsegmentator_scheme(2)
    ids = [i for i, n in names.items() if n in structures]
    img = sitk.ReadImage(str(label_file))
    arr = np.isin(sitk.GetArrayViewFromImage(img), ids).astype(np.uint8)
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT / "examples" / "data"))
    ap.add_argument("--atlas_out", default=str(ROOT / "nnunet_ctarr" / "resources" / "atlas_ctarr_starter.npz"))
    ap.add_argument("--regions_out", default=str(ROOT / "region_defs"))
    args = ap.parse_args()
    data = Path(args.data)
    anat = {k: load_anatomy(data / v, warnings=WarningLog()) for k, v in SUBJECTS.items()}
    atlas = build_atlas([anatomy_to_volume(a) for a in anat.values()], list(anat))
    atlas.meta["provenance"] = (
        "TotalSegmentator v2 labels of two real CTs: TotalSegmentator example CT "
        "(abdomen-pelvis, CC BY 4.0) and LIDC-IDRI-0001 chest CT (CC BY 3.0), "
        "see examples/data/PROVENANCE.md"
    )
    atlas.save(args.atlas_out)
    atlas = Atlas.load(args.atlas_out)
    print(
        f"atlas {atlas.atlas_id}: grid {atlas.shape_zyx[::-1]} (x,y,z) at {atlas.spacing[0]} mm; "
        f"groups without data: {atlas.meta['groups_without_data']}"
    )
    out = Path(args.regions_out)
    for name, structures in REGION_STRUCTURES.items():
        cases = [(k, anat[k], roi_from_labels(data / SUBJECTS[k], structures)) for k in SUBJECTS]
        learned = learn_region(
            cases,
            atlas,
            name,
            threshold=0.0,
            margin_mm=MARGIN_MM,
            progress=False,
            provenance={
                "source": "scripts/build_starter_resources.py",
                "roi_structures_totalsegmentator_v2": structures,
            },
        )
        learned.region.save(out / f"{name}.json")
        sizes = [np.round(b[1] - b[0]).astype(int).tolist() for b in learned.region.boxes_mm]
        print(
            f"region {name}: {learned.n_scans} scan(s), {len(sizes)} box(es), sizes (mm, no margin) {sizes}"
            + (f"; skipped {learned.skipped}" if learned.skipped else "")
        )


if __name__ == "__main__":
    main()
