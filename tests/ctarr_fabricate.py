"""Fabricate a checkout of the original CTARR (github.com/ThomasBudd/ctarr) in its exact file
format from this package's own atlas and regions: the inverse of docs/ctarr_import.md, written
here independently of ``nnunet_ctarr.core.build.ctarr_import`` (test helper, not shipped; it
contains none of ctarr's files).

Upstream format: ``ctarr/file_storage/seg_atlas.npy`` uint8 (19, Z, X, Y) = probability x 255;
``<region>.npy`` float64 (n, 2, 3) [lower, upper] voxel-face mm on the axes (z, x, y), in the
frame centred on the atlas volume, without the 10 mm that upstream adds when loading.
Upstream axes for axially stored (RAS) build scans: "z" = inferior (NIfTI k reversed),
"x" = posterior (j reversed), "y" = patient left (i reversed); ``mirrored=True`` makes "y" point
to patient right (LAS-stored build scans), for the atlas and the boxes alike.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from nnunet_ctarr.core.anatomy.atlas import Atlas
from nnunet_ctarr.core.regions.region import Region

UPSTREAM_MARGIN_MM = 10.0


def atlas_centre_xyz(atlas: Atlas) -> np.ndarray:
    """World mm (package frame) of the atlas grid's centre = upstream's origin."""
    n_xyz = np.array(atlas.shape_zyx[::-1], float)
    return atlas.origin + (n_xyz - 1) / 2 * atlas.spacing


def upstream_atlas(atlas: Atlas, mirrored: bool = False) -> np.ndarray:
    """(19, Z, X, Y) uint8: package (19, z, y, x) with z reversed (and y upstream reversed if mirrored)."""
    prob8 = np.stack([np.rint(np.clip(p, 0, 1) * 255).astype(np.uint8) for p in atlas.prob])
    out = prob8[:, ::-1, :, :]
    if mirrored:
        out = out[:, :, :, ::-1]
    return np.ascontiguousarray(out)


def upstream_boxes(boxes_xyz: np.ndarray, centre_xyz: np.ndarray, mirrored: bool = False) -> np.ndarray:
    """(K, 2, 3) package xyz boxes -> upstream (z, x, y) boxes in the centred frame."""
    lo, hi = boxes_xyz[:, 0] - centre_xyz, boxes_xyz[:, 1] - centre_xyz
    zl, zh = -hi[:, 2], -lo[:, 2]  # "z" points inferior
    xl, xh = lo[:, 1], hi[:, 1]  # "x" points posterior
    yl, yh = (-hi[:, 0], -lo[:, 0]) if mirrored else (lo[:, 0], hi[:, 0])  # "y": left (right if mirrored)
    return np.stack([np.stack([zl, xl, yl], 1), np.stack([zh, xh, yh], 1)], 1).astype(np.float64)


def brain_box_xyz(atlas: Atlas) -> np.ndarray:
    """A hand-made brain box (the starter atlas has no head): the top 150 mm of the atlas, centred."""
    lo, hi = atlas.extent()
    mid = (lo + hi) / 2
    return np.array([[[mid[0] - 75, mid[1] - 90, hi[2] - 150], [mid[0] + 75, mid[1] + 90, hi[2]]]])


def fabricate(
    root: Path,
    atlas: Atlas,
    regions: list[Region],
    mirrored: bool = False,
    mirror_boxes: bool | None = None,
    git: bool = False,
) -> dict[str, np.ndarray]:
    """Write a ctarr checkout at ``root``; returns region name -> the *tight-plus-margin-minus-10*
    package boxes that were written (what the import must give back, up to the centre shift).
    ``mirror_boxes`` (default: ``mirrored``) lets the boxes disagree with the atlas."""
    storage = root / "ctarr" / "file_storage"
    storage.mkdir(parents=True)
    (root / "ctarr" / "__init__.py").write_text("# fabricated for a test, not ctarr's code\n")
    np.save(storage / "seg_atlas.npy", upstream_atlas(atlas, mirrored))
    centre = atlas_centre_xyz(atlas)
    written = {}
    for r in regions:
        # upstream stores the boxes without margin and adds 10 mm when loading: keep the region's total margin
        written[r.name] = r.boxes_with_margin(-UPSTREAM_MARGIN_MM)
    written["brain"] = brain_box_xyz(atlas)
    boxes_mirrored = mirrored if mirror_boxes is None else mirror_boxes
    for name, boxes in written.items():
        np.save(storage / f"{name}.npy", upstream_boxes(boxes, centre, boxes_mirrored))
    if git:
        cmd = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
        subprocess.run(["git", "init", "-q", str(root)], check=True)
        subprocess.run(cmd + ["add", "-A"], check=True)
        subprocess.run(cmd + ["commit", "-q", "-m", "fabricated"], check=True)
    return written
