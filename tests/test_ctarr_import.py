"""nnUNetv2_ctarr_import_ctarr on checkouts of the original CTARR fabricated in its exact file format
from this package's own atlas and regions (tests/ctarr_fabricate.py: the documented inverse)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import ABDOMEN
from ctarr_fabricate import atlas_centre_xyz, brain_box_xyz, fabricate, upstream_atlas

from nnunet_ctarr.cli.common import run_cli
from nnunet_ctarr.cli.import_ctarr import main
from nnunet_ctarr.core.anatomy.atlas import Atlas
from nnunet_ctarr.core.anatomy.masks import load_anatomy
from nnunet_ctarr.core.base.errors import CTARRError, WarningLog
from nnunet_ctarr.core.build.atlas_set import write_set
from nnunet_ctarr.core.build.ctarr_import import convert, read_checkout
from nnunet_ctarr.core.localise.localisation import locate, plan_region
from nnunet_ctarr.core.regions.region import Region, builtin_regions, load_region, load_regions


@pytest.fixture(scope="module")
def originals():
    return Atlas.load(), [Region.from_file(p) for p in builtin_regions().values()]


@pytest.fixture(scope="module")
def checkout(originals, tmp_path_factory):
    """A git checkout of the fabricated ctarr (the plain, unmirrored one) and what its boxes hold."""
    root = tmp_path_factory.mktemp("fab") / "ctarr"
    return root, fabricate(root, *originals, git=True)


@pytest.fixture(scope="module")
def imported(checkout, tmp_path_factory):
    """The command run on the checkout under umask 0o027: (data folder, printed text, the atlas)."""
    data, out = tmp_path_factory.mktemp("data"), io.StringIO()
    old = os.umask(0o027)
    try:
        with contextlib.redirect_stdout(out):
            assert main([str(checkout[0]), "-o", str(data)]) == 0
    finally:
        os.umask(old)
    return data, out.getvalue(), Atlas.load(data / "ctarr" / "atlas.npz")


def _ranges(image, loc, region, clipped: bool) -> np.ndarray:
    """Index boxes (K, 2, 3) of a region in the image: the crops (clipped) or the full boxes."""
    boxes = plan_region(image, loc, region).boxes
    return np.array([[b.start_xyz, b.stop_xyz] if clipped else [b.full_start_xyz, b.full_stop_xyz] for b in boxes])


def test_import_gives_the_original_atlas_boxes_and_crops(originals, checkout, imported):
    atlas, regions = originals
    root, written = checkout
    commit = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert f"(commit {commit[:12]})" in imported[1] and "12 region(s), margin 10 mm" in imported[1]
    folder = imported[0] / "ctarr"
    imp = imported[2]
    centre = atlas_centre_xyz(atlas)
    # (a) the atlas, up to upstream's centre origin (the grid centre is at 0 mm)
    assert imp.prob.shape == atlas.prob.shape
    assert np.abs(imp.prob - atlas.prob).max() <= 1 / 255 + 1e-6
    np.testing.assert_allclose(imp.origin, atlas.origin - centre)
    np.testing.assert_allclose(imp.spacing, atlas.spacing)
    assert (imp.observed == atlas.observed).all() and not imp.observed[[0, 10]].any()  # no skull, no brain
    assert (imp.coverage == 1).all() and imp.meta["provenance"]["commit"] == commit
    # the boxes with their margins, brain included
    got = {n: Region.from_file(folder / "regions" / f"{n}.json") for n in written}
    assert sorted(p.stem for p in (folder / "regions").iterdir()) == sorted(written) and "brain" in got
    for r in regions + [Region("brain", brain_box_xyz(atlas), 10.0)]:
        g = got[r.name]
        assert g.margin_mm == 10 and g.atlas_id == imp.atlas_id
        assert g.provenance["file"] == f"ctarr/file_storage/{r.name}.npy" and g.provenance["commit"] == commit
        np.testing.assert_allclose(g.boxes_with_margin() + centre, r.boxes_with_margin(), atol=0.01)
    # (b) crops of the bundled CT: original atlas + regions vs imported atlas + regions
    image = sitk.ReadImage(str(ABDOMEN[0]))
    anatomy = load_anatomy(ABDOMEN[1], warnings=WarningLog())
    full = replace(atlas, coverage=np.ones_like(atlas.coverage), meta={}, _cache={})  # what upstream's format can carry
    loc_o, loc_f, loc_i = (locate(image, anatomy, a) for a in (atlas, full, imp))
    np.testing.assert_allclose(loc_i.transform.scale, loc_f.transform.scale, atol=1e-6)
    np.testing.assert_allclose(loc_i.transform.translation, loc_f.transform.translation - centre, atol=1e-3)
    n_cropped = 0
    for r in regions:
        # the crops within one voxel of the original atlas' crops (the two registrations differ
        # only by the original's partial coverage) and of the full-coverage original's full boxes
        for loc, want, clipped in ((loc_o, r, True), (loc_f, r, False)):
            a, b = _ranges(image, loc_i, got[r.name], clipped), _ranges(image, loc, want, clipped)
            assert a.shape == b.shape and np.abs(a - b).max() <= 1, (r.name, a, b)
        n_cropped += len(plan_region(image, loc_i, got[r.name]).usable)
    assert n_cropped == 12  # every box of the 11 regions (kidneys: 2) reaches into the abdomen CT


def test_mirrored_checkout_mirrors_atlas_and_boxes_together(tmp_path, originals, checkout, imported):
    atlas, regions = originals
    fabricate(tmp_path / "b", atlas, regions, mirrored=True)
    a, b = read_checkout(checkout[0]), read_checkout(tmp_path / "b")
    assert not np.array_equal(a.atlas_raw, b.atlas_raw)
    assert not np.allclose(a.boxes["spleen"], b.boxes["spleen"])
    ib = convert(b)
    assert ib.axis_map.sign_xyz == (-1, 1, -1)
    plain = imported[2]
    assert plain.meta["provenance"]["axis_map"][0].startswith("x (patient left) = +upstream")
    assert np.array_equal(plain.prob, ib.atlas.prob)
    for r in ib.regions:
        np.testing.assert_allclose(
            r.boxes_mm, Region.from_file(imported[0] / "ctarr" / "regions" / f"{r.name}.json").boxes_mm, atol=0.006
        )
    spleen = ib.regions[[r.name for r in ib.regions].index("spleen")]
    assert spleen.boxes_mm[0, 0, 0] > 0  # on the patient's left (+x)
    # atlas from the mirrored checkout, boxes from the plain one: refused, never silently mirrored
    storage, mixed = tmp_path / "b" / "ctarr" / "file_storage", tmp_path / "c" / "ctarr" / "file_storage"
    mixed.mkdir(parents=True)
    (mixed / "seg_atlas.npy").symlink_to(storage / "seg_atlas.npy")
    for f in (checkout[0] / "ctarr" / "file_storage").glob("[!s]*.npy"):  # the boxes but spine, spleen, stomach
        (mixed / f.name).symlink_to(f)
    (mixed / "spleen.npy").symlink_to(checkout[0] / "ctarr" / "file_storage" / "spleen.npy")
    with pytest.raises(CTARRError, match="disagree left-right") as e:
        convert(read_checkout(tmp_path / "c"))
    assert "spleen.npy" in str(e.value) and "\n" not in str(e.value)


def _broken(kind: str, root, atlas) -> None:
    """A folder that is not (or not quite) a ctarr checkout."""
    storage = root / "ctarr" / "file_storage"
    storage.mkdir(parents=True)
    good = upstream_atlas(atlas)
    files = {
        "no_atlas": {"liver.npy": np.zeros((1, 2, 3))},
        "atlas_shape": {"seg_atlas.npy": good[:3]},
        "pickle": {"seg_atlas.npy": np.array([{"a": 1}], dtype=object)},
        "box": {"seg_atlas.npy": good, "liver.npy": np.zeros((2, 3))},
    }[kind]
    for name, arr in files.items():
        np.save(storage / name, arr, allow_pickle=True)


@pytest.mark.parametrize("kind", ["empty", "no_atlas", "atlas_shape", "pickle", "box"])
def test_not_a_ctarr_checkout_is_refused_in_one_line(tmp_path, originals, capsys, kind):
    if kind != "empty":
        _broken(kind, tmp_path, originals[0])
    with pytest.raises(SystemExit) as e:
        run_cli(main, [str(tmp_path), "-o", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.startswith("error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "data" / "ctarr").exists()


def test_selected_by_name_and_written_with_the_umask(originals, checkout, imported, monkeypatch):
    atlas, regions = originals
    monkeypatch.setenv("NNUNET_CTARR_DATA", str(imported[0]))
    folder = imported[0] / "ctarr"
    assert {oct(p.stat().st_mode & 0o777) for p in folder.rglob("*") if p.is_file()} == {"0o640"}
    assert oct(folder.stat().st_mode & 0o777) == oct((folder / "regions").stat().st_mode & 0o777) == "0o750"
    monkeypatch.chdir(checkout[0].parent)  # holds the clone, a folder named ctarr: the set is still meant
    a = Atlas.load("ctarr")
    assert a.atlas_id == load_region("ctarr:spleen").atlas_id == imported[2].atlas_id != atlas.atlas_id
    assert sorted(r.name for r in load_regions(["ctarr:all"])) == sorted([r.name for r in regions] + ["brain"])
    assert load_region("liver").atlas_id == atlas.atlas_id  # built-in names are untouched
    with pytest.raises(CTARRError, match="no atlas file 'ctarx' and no imported atlas set"):
        Atlas.load("ctarx")
    with pytest.raises(CTARRError, match="unknown region 'livr' in atlas set 'ctarr'"):
        load_region("ctarr:livr")
    with pytest.raises(CTARRError, match="no imported atlas set 'other'"):
        load_regions(["other:all"])
    # the clone itself is never replaced (-o its parent folder, default name ctarr)
    with pytest.raises(CTARRError, match="exists and is not an atlas set"):
        write_set(a, [], "", checkout[0].parent, "ctarr")
    assert (checkout[0] / "ctarr" / "file_storage" / "seg_atlas.npy").is_file()


def test_api_regions_of_an_imported_set_bring_its_atlas(imported, monkeypatch):
    """api.crop(regions=["ctarr:liver"]) locates on the set's atlas, as the commands do (no warning
    about another atlas); the shipped atlas given explicitly is warned about."""
    import nnunet_ctarr
    from nnunet_ctarr import api
    from nnunet_ctarr.core.anatomy.atlas import DEFAULT_ATLAS

    monkeypatch.setenv("NNUNET_CTARR_DATA", str(imported[0]))
    own = api.crop(str(ABDOMEN[0]), ["ctarr:liver"], anatomy=str(ABDOMEN[1]), boxes_only=True)
    named = api.crop(str(ABDOMEN[0]), ["ctarr:liver"], anatomy=str(ABDOMEN[1]), boxes_only=True, atlas="ctarr")
    assert not any("was defined on atlas" in w for w in own.warnings)
    assert own.regions[0].decision.plan.usable[0].start_xyz.tolist() == \
        named.regions[0].decision.plan.usable[0].start_xyz.tolist()
    shipped = Path(nnunet_ctarr.__file__).parent / "resources" / DEFAULT_ATLAS
    other = api.crop(str(ABDOMEN[0]), ["ctarr:liver"], anatomy=str(ABDOMEN[1]), boxes_only=True, atlas=str(shipped))
    assert any("was defined on atlas" in w for w in other.warnings)
    tf = [r.located.localisation.transform.translation for r in (own, named, other)]
    assert np.array_equal(tf[0], tf[1]) and not np.allclose(tf[0], tf[2], atol=1.0)   # another frame


def test_predict_multi_spec_regions_of_an_imported_set_bring_its_atlas(imported, random_models, tmp_path,
                                                                     monkeypatch):
    """A spec whose every region is SET:REGION: the command locates on that set's atlas (the
    predictor it builds gets it; the predictor itself is stubbed: no network runs here)."""
    import json
    import shutil

    import nnunet_ctarr.inference.multi_predictor as mp
    from nnunet_ctarr.cli.predict_multi import main as multi_main

    monkeypatch.setenv("NNUNET_CTARR_DATA", str(imported[0]))
    seen = {}

    class Stub:
        def __init__(self, spec, anatomy, atlas, *a, **k):
            seen["atlas_id"], self.failed = atlas.atlas_id, {}

        def predict_files(self, lists, out, overwrite=True):
            return {}

    monkeypatch.setattr(mp, "MultiModelPredictor", Stub)
    (tmp_path / "img").mkdir()
    shutil.copy(ABDOMEN[0], tmp_path / "img" / "abd_0000.nii.gz")
    spec = {"labels": {"background": 0, "liver": 1},
            "models": [{"folder": str(random_models["tiny"]), "region": "ctarr:liver", "labels": {"liver": "liver"}}]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    argv = ["-i", str(tmp_path / "img"), "-o", str(tmp_path / "out"), "-spec", str(tmp_path / "spec.json"),
            "-anatomy_seg", str(ABDOMEN[1]), "-device", "cpu"]
    assert multi_main(argv) == 0
    assert seen["atlas_id"] == imported[2].atlas_id != Atlas.load().atlas_id
