"""QC picture: coronal and sagittal projections of the CT with the anatomy and the region
boxes (like Figure 1 of the CTARR paper). Drawn in the world LPS frame, head up."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..anatomy.groups import GROUPS
from ..anatomy.volume import MaskVolume
from ..base.files import atomic_write
from ..regions.cropping import CropPlan


def _colors() -> np.ndarray:
    import matplotlib
    return matplotlib.colormaps["tab20"](np.arange(len(GROUPS)))[:, :3]


def save_figure(fig, path: str | Path, dpi: int) -> None:
    """Save a matplotlib figure as PNG atomically (umask permissions; a full disk or a folder that
    cannot be written is one :class:`CTARRError` naming the path, and no partial file is left), and
    close it."""
    import matplotlib.pyplot as plt
    try:
        atomic_write(Path(path), ".png", lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    finally:
        plt.close(fig)


def picture_name(case: str, region: str) -> str:
    """The crop command's QC picture of a case and region (``--qc``), found by the batch report."""
    return f"{case}_{region}_qc.png"


def render_qc(path: str | Path, image: sitk.Image, vol: MaskVolume, plan: CropPlan | None,
              title: str = "") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    ref = vol.label_image()
    ct = sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), ref, sitk.Transform(), sitk.sitkLinear, -1024.0)
    ct = np.clip(sitk.GetArrayFromImage(ct), -1000, 1000) + 1000          # (z, y, x), air = 0
    lab = vol.labels if vol.labels is not None else sitk.GetArrayFromImage(ref)
    cols = _colors()
    onehot = (lab[None] == np.arange(1, len(GROUPS) + 1)[:, None, None, None]).astype(np.float32)
    lo, hi = vol.extent()
    fig, axes = plt.subplots(1, 2, figsize=(10, 6.5))
    for ax, sum_axis, (hx, name) in zip(axes, (1, 2), ((0, "coronal (x: patient right -> left)"),
                                                      (1, "sagittal (y: anterior -> posterior)"))):
        gray = ct.sum(sum_axis)
        gray = gray / max(gray.max(), 1e-6)
        over = np.tensordot(onehot.sum(1 + sum_axis), cols, axes=([0], [0]))   # (z, h, 3)
        weight = np.clip(onehot.sum(1 + sum_axis).sum(0) / max(onehot.shape[1 + sum_axis] * 0.15, 1), 0, 1)
        norm = over / np.maximum(onehot.sum(1 + sum_axis).sum(0)[..., None], 1e-6)
        rgb = gray[..., None] * (1 - 0.6 * weight[..., None]) + 0.6 * weight[..., None] * norm
        extent = (lo[hx], hi[hx], lo[2], hi[2])
        ax.imshow(np.clip(rgb, 0, 1), origin="lower", extent=extent, aspect="equal")
        if plan is not None:
            for b in plan.boxes:
                w0, w1 = b.world_mm
                color = "yellow" if b.status == "inside" else ("orange" if b.status == "partial" else "red")
                ax.add_patch(Rectangle((w0[hx], w0[2]), w1[hx] - w0[hx], w1[2] - w0[2], fill=False,
                                       edgecolor=color, linewidth=2))
        boxes = plan.boxes if plan is not None else []          # a plan without boxes: the anatomy's extent
        ax.set_xlim(min([lo[hx], *(b.world_mm[0][hx] for b in boxes)]) - 10,
                    max([hi[hx], *(b.world_mm[1][hx] for b in boxes)]) + 10)
        ax.set_ylim(min([lo[2], *(b.world_mm[0][2] for b in boxes)]) - 10,
                    max([hi[2], *(b.world_mm[1][2] for b in boxes)]) + 10)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("mm")
    axes[0].set_ylabel("z (mm, superior up)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
