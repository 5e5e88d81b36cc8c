"""The 19 groups and the name-based mappings from TotalSegmentator v1/v2, mask folders and
19-class maps."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import ABDOMEN, CHEST

from nnunet_ctarr.core.anatomy.groups import GROUPS, LabelScheme, group_of, totalsegmentator_scheme
from nnunet_ctarr.core.anatomy.label_maps import read_nifti_label_table
from nnunet_ctarr.core.anatomy.masks import load_anatomy
from nnunet_ctarr.core.base.errors import CTARRError, WarningLog


def test_19_groups_in_paper_order():
    assert len(GROUPS) == 19
    assert GROUPS[0] == "skull"
    assert GROUPS[13] == "heart"
    assert GROUPS[18] == "urinary_bladder"


@pytest.mark.parametrize(
    "name,group",
    [
        ("vertebrae_S1", "sacrum"),
        ("sacrum", "sacrum"),
        ("vertebrae_C3", "vertebrae_C"),
        ("vertebrae_T12", "vertebrae_T"),
        ("vertebrae_L5", "vertebrae_L"),
        ("rib_left_7", "ribs_left"),
        ("scapula_right", "ribs_right"),
        ("clavicula_left", "ribs_left"),
        ("heart", "heart"),
        ("heart_ventricle_left", "heart"),
        ("heart_myocardium", "heart"),
        ("lung_middle_lobe_right", "lung_right"),
        ("kidney_cyst_left", "kidney_left"),
        ("urinary_bladder", "urinary_bladder"),
        ("aorta", None),
        ("femur_left", None),
        ("costal_cartilages", None),
        ("face", None),
    ],
)
def test_structure_names_map_to_groups(name, group):
    assert group_of(name) == group


def test_v1_cannot_express_skull_and_sternum():
    v1 = LabelScheme.named("ts_v1")
    v2 = LabelScheme.named("ts_v2")
    assert v2.observed.all()
    unobserved = {GROUPS[i] for i in np.nonzero(~v1.observed)[0]}
    assert unobserved == {"skull", "sternum"}


def test_embedded_totalsegmentator_names_are_used():
    table = read_nifti_label_table(ABDOMEN[1])
    assert table[1] == "spleen"
    assert table[91] == "skull"


def _relabel(img: sitk.Image, src: dict[int, str], dst: dict[int, str], alias: dict[str, str]) -> sitk.Image:
    by_name = {n: i for i, n in dst.items()}
    lut = np.zeros(256, np.uint8)
    for i, n in src.items():
        lut[i] = by_name.get(alias.get(n, n), 0)
    out = sitk.GetImageFromArray(lut[sitk.GetArrayViewFromImage(img)])
    out.CopyInformation(img)
    return out


def test_v1_map_is_detected_and_gives_same_groups(tmp_path, ts_v2):
    v2img = sitk.ReadImage(str(CHEST[1]))
    # v1 has heart chambers instead of "heart" and no kidney cysts
    alias = {"heart": "heart_ventricle_left", "kidney_cyst_left": "kidney_left", "kidney_cyst_right": "kidney_right"}
    v1img = _relabel(v2img, ts_v2.names, totalsegmentator_scheme(1), alias)
    sitk.WriteImage(v1img, str(tmp_path / "v1.nii.gz"))
    w = WarningLog()
    a1 = load_anatomy(tmp_path / "v1.nii.gz", warnings=w)
    assert "v1" in a1.source
    a2 = load_anatomy(CHEST[1], warnings=WarningLog())
    g1 = sitk.GetArrayViewFromImage(a1.labels)
    g2 = sitk.GetArrayViewFromImage(a2.labels)
    same = (g1 == g2) | np.isin(g2, [GROUPS.index("sternum") + 1])  # v1 has no sternum
    assert same.all()
    assert not a1.observed[GROUPS.index("sternum")]
    assert a2.observed[GROUPS.index("sternum")]


def test_v2_without_embedded_names_and_unknown_label_warns():
    w = WarningLog()
    a = load_anatomy(CHEST[1], warnings=w)
    assert "v2" in a.source
    assert any("118" in m for m in w)  # the chest map's stray id
    counts = a.group_voxel_counts()
    assert counts[GROUPS.index("heart")] > 0
    assert counts[GROUPS.index("skull")] == 0


def test_ctarr19_map_is_detected(tmp_path):
    a = load_anatomy(ABDOMEN[1], warnings=WarningLog())
    sitk.WriteImage(a.labels, str(tmp_path / "g19.nii.gz"))
    b = load_anatomy(tmp_path / "g19.nii.gz", warnings=WarningLog())
    assert "CTARR" in b.source
    assert np.array_equal(sitk.GetArrayViewFromImage(a.labels), sitk.GetArrayViewFromImage(b.labels))


def test_mask_folder_in_totalsegmentator_layout(ts_root):
    assert len(list((ts_root / "s0001" / "segmentations").iterdir())) == 117  # all files, as TotalSegmentator writes
    a = load_anatomy(ts_root / "s0001", warnings=WarningLog())
    b = load_anatomy(ABDOMEN[1], warnings=WarningLog())
    assert np.array_equal(sitk.GetArrayViewFromImage(a.labels), sitk.GetArrayViewFromImage(b.labels))
    assert a.observed.all()


def test_mask_folder_without_known_names_is_an_error(tmp_path):
    sitk.WriteImage(sitk.Image(8, 8, 8, sitk.sitkUInt8), str(tmp_path / "tumour.nii.gz"))
    with pytest.raises(CTARRError, match="none of the"):
        load_anatomy(tmp_path)


def test_float_label_map_with_fractions_is_refused(tmp_path):
    img = sitk.Image(16, 16, 16, sitk.sitkFloat32) + 0.5
    sitk.WriteImage(img, str(tmp_path / "prob.nii.gz"))
    with pytest.raises(CTARRError, match="non-integer"):
        load_anatomy(tmp_path / "prob.nii.gz", fmt="ts_v2")


def _folder_copy(ts_root, tmp_path, name: str):
    dst = tmp_path / name
    shutil.copytree(ts_root / "s0001" / "segmentations", dst)
    return dst


def test_mask_folder_matched_per_mask_in_world_space(ts_root, tmp_path):
    """A mask stored with flipped / permuted axes (same world position) is reordered exactly."""
    ref = load_anatomy(ts_root / "s0001", warnings=WarningLog())
    folder = _folder_copy(ts_root, tmp_path, "flipped")
    for name, code in (("liver", "RPS"), ("kidney_left", "LAI"), ("vertebrae_L1", "SPL")):
        m = sitk.ReadImage(str(folder / f"{name}.nii.gz"))
        sitk.WriteImage(sitk.DICOMOrient(m, code), str(folder / f"{name}.nii.gz"))
    w = WarningLog()
    a = load_anatomy(folder, warnings=w)
    assert np.array_equal(sitk.GetArrayViewFromImage(a.labels), sitk.GetArrayViewFromImage(ref.labels))
    assert not w  # same voxels: no resampling warning


def test_mask_folder_mask_elsewhere_names_the_file(ts_root, tmp_path):
    folder = _folder_copy(ts_root, tmp_path, "moved")
    m = sitk.ReadImage(str(folder / "spleen.nii.gz"))
    m.SetOrigin([o + 1000.0 for o in m.GetOrigin()])
    sitk.WriteImage(m, str(folder / "spleen.nii.gz"))
    with pytest.raises(CTARRError, match="mask spleen.nii.gz does not match"):
        load_anatomy(folder, warnings=WarningLog())


def test_mask_folder_on_another_grid_is_resampled_with_a_warning(ts_root, tmp_path):
    folder = _folder_copy(ts_root, tmp_path, "regrid")
    m = sitk.ReadImage(str(folder / "liver.nii.gz"))
    fine = sitk.Resample(
        m,
        [2 * s for s in m.GetSize()],
        sitk.Transform(),
        sitk.sitkNearestNeighbor,
        m.GetOrigin(),
        [s / 2 for s in m.GetSpacing()],
        m.GetDirection(),
        0,
        m.GetPixelID(),
    )
    sitk.WriteImage(fine, str(folder / "liver.nii.gz"))
    w = WarningLog()
    a = load_anatomy(folder, warnings=w)
    assert any("liver.nii.gz is on another grid" in x for x in w)
    liver = GROUPS.index("liver") + 1
    n_ref = int(
        (sitk.GetArrayViewFromImage(load_anatomy(ts_root / "s0001", warnings=WarningLog()).labels) == liver).sum()
    )
    assert abs(int((sitk.GetArrayViewFromImage(a.labels) == liver).sum()) - n_ref) < 0.05 * n_ref
