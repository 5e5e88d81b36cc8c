"""The Python API on images in memory: crops that overlay the source exactly, nothing written, the
same boxes as the command; boxes only + cutting the crops later from the sidecar."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import ABDOMEN, run_in_process

from nnunet_ctarr import api
from nnunet_ctarr.cli.crop import main as crop_main
from nnunet_ctarr.core.anatomy.atlas import Atlas
from nnunet_ctarr.core.localise.decision import Status


def _files(folder) -> set[str]:
    return {os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs}


def test_crop_in_memory_overlays_the_source_writes_nothing_and_matches_the_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image, labels = sitk.ReadImage(str(ABDOMEN[0])), sitk.ReadImage(str(ABDOMEN[1]))
    before = _files(tmp_path)
    result = api.crop(image, ["kidneys", "liver"], anatomy=labels)
    assert _files(tmp_path) == before  # nothing written
    src = sitk.GetArrayViewFromImage(image)
    for rc in result.regions:
        assert rc.status is Status.CROPPED and rc.decision.trusted
        for piece in rc.pieces:
            crop, b = piece.channels[0], piece.box
            assert crop.GetSpacing() == image.GetSpacing() and crop.GetDirection() == image.GetDirection()
            assert np.allclose(crop.GetOrigin(), image.TransformIndexToPhysicalPoint([int(v) for v in b.start_xyz]))
            (x0, y0, z0), (x1, y1, z1) = b.start_xyz, b.stop_xyz
            assert np.array_equal(sitk.GetArrayViewFromImage(crop), src[z0:z1, y0:y1, x0:x1])
    out = tmp_path / "cmd"
    assert (
        crop_main(["-i", str(ABDOMEN[0]), "-anatomy_seg", str(ABDOMEN[1]), "-r", "kidneys", "liver", "-o", str(out)])
        == 0
    )
    side = json.loads((out / "example_ct.ctarr.json").read_text())["regions"]
    for rc in result.regions:
        name = rc.decision.region.name
        api_boxes = [(b.start_xyz.tolist(), b.stop_xyz.tolist()) for b in rc.decision.plan.boxes]
        assert api_boxes == [(b["index_start_xyz"], b["index_stop_xyz"]) for b in side[name]["boxes"]]


def test_all_means_every_built_in_region():
    from nnunet_ctarr.core.regions.region import builtin_regions

    result = api.crop(str(ABDOMEN[0]), "all", anatomy=str(ABDOMEN[1]), boxes_only=True)
    assert [r.decision.region.name for r in result.regions] == list(builtin_regions())
    assert all(not p.channels for r in result.regions for p in r.pieces)  # boxes only: nothing cut


def test_locate_in_memory_gives_the_transform():
    located = api.locate(sitk.ReadImage(str(ABDOMEN[0])), anatomy=str(ABDOMEN[1]))
    assert located.localisation is not None and located.refused is None
    assert located.localisation.transform.orientation_text == "as in header"
    assert located.scan_trust(Atlas.load()).trusted


def test_boxes_only_then_crops_cut_from_the_sidecar_equal_the_written_crops(tmp_path):
    args = ["-i", str(ABDOMEN[0]), "-anatomy_seg", str(ABDOMEN[1]), "-r", "kidneys"]
    r = run_in_process(crop_main, [*args, "-o", str(tmp_path / "boxes"), "--boxes_only"])
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "boxes").iterdir()) == ["example_ct.ctarr.json"]
    assert "2 box(es)" in r.stdout
    assert crop_main([*args, "-o", str(tmp_path / "crops")]) == 0
    cut = api.crops_from_sidecar(tmp_path / "boxes" / "example_ct.ctarr.json", str(ABDOMEN[0]))
    assert len(cut["kidneys"]) == 2
    for k, crop in enumerate(cut["kidneys"]):
        written = sitk.ReadImage(str(tmp_path / "crops" / f"example_ct_kidneys_box{k}.nii.gz"))
        assert crop.GetOrigin() == written.GetOrigin() and crop.GetSize() == written.GetSize()
        assert np.array_equal(sitk.GetArrayViewFromImage(crop), sitk.GetArrayViewFromImage(written))


def test_crops_from_a_sidecar_refuse_an_image_on_another_grid(tmp_path):
    from nnunet_ctarr.core.base.errors import CTARRError

    r = run_in_process(
        crop_main,
        ["-i", str(ABDOMEN[0]), "-anatomy_seg", str(ABDOMEN[1]), "-r", "kidneys", "-o", str(tmp_path), "--boxes_only"],
    )
    assert r.returncode == 0, r.stderr
    other = sitk.ReadImage(str(ABDOMEN[0]))[:, :, 10:]  # the same scan without its 10 lowest slices
    with pytest.raises(CTARRError, match="not on the grid"):
        api.crops_from_sidecar(tmp_path / "example_ct.ctarr.json", other)


def test_boxes_only_with_a_map_reads_headers_only_and_decides_as_a_full_read(tmp_path):
    from nnunet_ctarr.core.base.geometry import Geometry

    regions = ["kidneys", "liver", "heart", "lungs"]
    quick = api.crop(str(ABDOMEN[0]), regions, anatomy=str(ABDOMEN[1]), boxes_only=True)
    full = api.crop(str(ABDOMEN[0]), regions, anatomy=str(ABDOMEN[1]), boxes_only=True, read_voxels=True)
    assert all(isinstance(c, Geometry) for c in quick.channels)            # no voxel read
    assert isinstance(full.image, sitk.Image) and quick.geometry == Geometry.of(full.image)
    for a, b in zip(quick.regions, full.regions):
        assert a.status is b.status and a.decision.trust.measures == b.decision.trust.measures
        assert [(p.box.start_xyz.tolist(), p.box.stop_xyz.tolist()) for p in a.pieces if p.box] == \
               [(p.box.start_xyz.tolist(), p.box.stop_xyz.tolist()) for p in b.pieces if p.box]
    hu = api.crop(str(ABDOMEN[0]), ["kidneys"], boxes_only=True)            # the HU anatomy needs the voxels
    assert isinstance(hu.image, sitk.Image)


def test_the_voxel_checks_a_header_only_run_skips_run_when_the_crops_are_cut(tmp_path):
    from nnunet_ctarr.core.base.errors import CTARRError

    img = sitk.ReadImage(str(ABDOMEN[0]))
    scaled = sitk.Cast(sitk.Cast(img, sitk.sitkFloat32) * 0.001, sitk.sitkFloat32)   # not in HU
    sitk.WriteImage(scaled, str(tmp_path / "scaled.nii.gz"))
    r = run_in_process(crop_main, ["-i", str(tmp_path / "scaled.nii.gz"), "-anatomy_seg", str(ABDOMEN[1]),
                                   "-r", "kidneys", "-o", str(tmp_path / "out"), "--boxes_only"])
    assert r.returncode == 0, r.stderr
    sidecar = tmp_path / "out" / "scaled.ctarr.json"
    with pytest.raises(CTARRError, match="Hounsfield"):
        api.crops_from_sidecar(sidecar, str(tmp_path / "scaled.nii.gz"))
    assert len(api.crops_from_sidecar(sidecar, str(tmp_path / "scaled.nii.gz"), hu_check=False)["kidneys"]) == 2
    r = run_in_process(crop_main, ["-i", str(tmp_path / "scaled.nii.gz"), "-anatomy_seg", str(ABDOMEN[1]),
                                   "-r", "kidneys", "-o", str(tmp_path / "qc"), "--boxes_only", "--qc"])
    assert r.returncode != 0 and "Hounsfield" in r.stdout + r.stderr      # --qc reads the voxels: checked now


def test_writing_qc_pictures_of_a_header_only_case_is_one_line_and_writes_nothing(tmp_path):
    from nnunet_ctarr.core.anatomy.atlas import Atlas
    from nnunet_ctarr.core.base.errors import CTARRError
    from nnunet_ctarr.core.outputs.case_writer import CropOptions, case_stamp, write_case

    quick = api.crop(str(ABDOMEN[0]), ["kidneys"], anatomy=str(ABDOMEN[1]), boxes_only=True)
    opts = CropOptions(qc=True, boxes_only=True)
    stamp = case_stamp(quick.case, [ABDOMEN[0]], Atlas.load(), opts, False, None)
    with pytest.raises(CTARRError, match="QC pictures need the image's voxels"):
        write_case(quick, stamp, tmp_path, opts)
    assert not any(tmp_path.iterdir())
    full = api.crop(str(ABDOMEN[0]), ["kidneys"], anatomy=str(ABDOMEN[1]), boxes_only=True, read_voxels=True)
    write_case(full, stamp, tmp_path, opts)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".png"]
