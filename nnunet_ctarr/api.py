"""The Python API: locate a CT on the atlas and cut its regions in memory; nothing is written.

    import SimpleITK as sitk
    from nnunet_ctarr import api

    result = api.crop("ct.nii.gz", ["liver", "kidneys"])          # anatomy from the CT's HU values
    result = api.crop(sitk.ReadImage("ct.nii.gz"), ["liver"], anatomy="ct_totalseg.nii.gz")
    for region in result.regions:
        print(region.decision.region.name, region.status, [p.box.start_xyz for p in region.pieces if p.box])
        crops = [p.channels[0] for p in region.pieces]                # SimpleITK images on the CT's grid

``image``: a file, a DICOM folder, a SimpleITK image, or a list of them (the channels of one case,
channel 0 located). ``anatomy``: None or ``"hu"`` (the CT's HU values), a TotalSegmentator keyword
(``totalsegmentator``, ``totalsegmentator:6mm``), an nnU-Net model folder, a label map or mask
folder (path), a label image (SimpleITK), :class:`AnatomyMasks` or any :class:`AnatomySource`. The
crop command (``nnUNetv2_ctarr_crop``) is this call per case plus :mod:`.core.outputs.case_writer`.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import SimpleITK as sitk

from .core.anatomy.atlas import Atlas
from .core.anatomy.masks import AnatomyMasks
from .core.anatomy.sources import AnatomySource, InMemoryAnatomy, PrecomputedAnatomy, anatomy_keyword
from .core.anatomy.totalseg_weights import model_for, resolve
from .core.base.cases import case_id
from .core.base.errors import CTARRError, WarningLog
from .core.base.geometry import Geometry
from .core.base.images import check_ct_intensities, match_label_to_image, read_geometry, read_image, write_image
from .core.base.integrity import check_finite
from .core.localise.decision import Located, Policy, Status, locate_case
from .core.outputs.records import CaseRecord
from .core.pipeline import CaseCrops, CutOptions, crop_case
from .core.regions.cropping import crop_image
from .core.regions.region import Region, atlas_named_by, check_region_atlas, load_regions

__all__ = ["anatomy_source", "crop", "crops_from_sidecar", "locate", "read_channels"]

ImageLike = str | Path | sitk.Image


def anatomy_source(anatomy=None, *, kind: str = "auto", fmt: str = "auto", atlas: Atlas | str | None = None,
                   device: str = "cpu", folds=None, checkpoint: str = "checkpoint_final.pth", step_size: float = 0.5,
                   disable_tta: bool = False, npp: int = 2, nps: int = 2, verbose: bool = False) -> AnatomySource:
    """The :class:`AnatomySource` an ``anatomy`` argument names (module docstring); ``kind``: what a
    path is (``map``: a label map or mask folder, ``model``: an nnU-Net model folder, ``auto``: a
    folder with plans.json is a model). nnU-Net is imported only for a model."""
    if isinstance(anatomy, AnatomySource):
        return anatomy
    if isinstance(anatomy, (AnatomyMasks, sitk.Image)):
        return InMemoryAnatomy(anatomy, "case")
    key = anatomy_keyword(str(anatomy)) if isinstance(anatomy, str) else None
    if anatomy is None or key == "hu":
        from .core.anatomy.hu_anatomy import HUAnatomy  # scipy.ndimage: imported when used
        return HUAnatomy(atlas, default=anatomy is None)
    model, name = Path(str(anatomy)), None
    if key is not None and model_for(key) is not None:
        model, folds, ts = resolve(key, folds, checkpoint)
        name = ts.keyword
    elif kind == "map" or (kind == "auto" and not (model.is_dir() and (model / "plans.json").is_file())):
        return PrecomputedAnatomy(model, fmt)
    from .inference.anatomy_model import ModelAnatomy
    return ModelAnatomy(model, folds, checkpoint, device, step_size, disable_tta, npp, nps, verbose, name=name)


def read_channels(image: ImageLike | list[ImageLike], hu_check: bool = True, allow_nonfinite: bool = False,
                  warnings: WarningLog | None = None) -> list[sitk.Image]:
    """The channels of one case, read and checked (finite voxels, channel 0 a CT in HU)."""
    warnings = warnings if warnings is not None else WarningLog()
    items = list(image) if isinstance(image, (list, tuple)) else [image]
    out = []
    for k, item in enumerate(items):
        name = f"image {Path(item).name}" if not isinstance(item, sitk.Image) else f"channel {k}"
        img = item if isinstance(item, sitk.Image) else read_image(item, warnings=warnings)
        img, n_bad = check_finite(img, name, allow_nonfinite, None if isinstance(item, sitk.Image) else Path(item))
        if n_bad:
            warnings.warn(f"{name}: {n_bad} NaN/infinite voxel(s) replaced by the image minimum")
        out.append(img)
    if not out:
        raise CTARRError("no image given")
    if hu_check:
        check_ct_intensities(out[0], "image" if isinstance(items[0], sitk.Image) else f"image {Path(items[0]).name}")
    return out


def _case_name(image: ImageLike | list[ImageLike], case: str | None) -> str:
    first = image[0] if isinstance(image, (list, tuple)) else image
    return case or ("case" if isinstance(first, sitk.Image) else case_id(first))


def _paths(image: ImageLike | list[ImageLike]) -> list[str] | None:
    """The input files of a case given by path (None: given in memory)."""
    items = list(image) if isinstance(image, (list, tuple)) else [image]
    return None if any(isinstance(i, sitk.Image) for i in items) else [str(i) for i in items]


def _read_grids(image: ImageLike | list[ImageLike]) -> list[Geometry] | None:
    """The grids of a case's channel files from their headers, or None when a voxel read is needed."""
    files = _paths(image)
    grids = [read_geometry(f) for f in files] if files else [None]
    return None if any(g is None for g in grids) else grids


def _load_anatomy(source: AnatomySource, case: str, image: ImageLike | list[ImageLike],
                  channel0: sitk.Image | Geometry, warnings: WarningLog, prepared: bool = False) -> AnatomyMasks:
    """The case's anatomy from ``source`` (prepared here unless ``prepared``): the HU anatomy from
    the image already read; a model on an in-memory image through a temporary file."""
    anat = source.from_image(channel0, warnings, case) if isinstance(channel0, sitk.Image) else None
    if anat is not None:                               # the HU anatomy: from the image already read
        return anat
    files = _paths(image)
    if not prepared and files is None and source.needs_files:
        with tempfile.TemporaryDirectory(prefix="ctarr_api_") as tmp:
            path = Path(tmp) / f"{case}_0000.nii.gz"
            write_image(channel0, path)
            source.prepare({case: [str(path)]})
            return source.load(case, warnings)
    if not prepared:
        source.prepare({case: files or []})
    return source.load(case, warnings)


def _regions(regions: str | Region | list[str | Region]) -> list[Region]:
    """Region objects as given, names and files loaded (``all``, ``SET:all``: every region of the set)."""
    items = [regions] if isinstance(regions, (str, Region)) else list(regions)
    out: list[Region] = []
    for r in items:
        out += [r] if isinstance(r, Region) else load_regions([r])
    return out


def locate(image: ImageLike | list[ImageLike], anatomy=None, *, atlas: Atlas | str | None = None,
           case: str | None = None, hu_check: bool = True) -> Located:
    """Where the image sits on the atlas (the transform, registration, or why it was refused)."""
    atlas = atlas if isinstance(atlas, Atlas) else Atlas.load(atlas)
    atlas.warm_up()                                    # the atlas side of the registration, while files are read
    warnings = WarningLog(case=_case_name(image, case))
    channels = read_channels(image, hu_check, warnings=warnings)
    anat = _load_anatomy(anatomy_source(anatomy, atlas=atlas), warnings.case, image, channels[0], warnings)
    return locate_case(channels[0], anat, atlas, warnings=warnings)


def crop(image: ImageLike | list[ImageLike], regions: str | Region | list[str | Region], anatomy=None, *,
         atlas: Atlas | str | None = None, labels: ImageLike | None = None, on_untrusted: str = "whole",
         margin_mm: float = 0.0, z_only: bool = False, pad: bool = False, fill_value: float | None = None,
         boxes_only: bool = False, read_voxels: bool = False, hu_check: bool = True, allow_nonfinite: bool = False,
         case: str | None = None, prepared: bool = False, lazy: bool = False) -> CaseCrops:
    """Locate the image once and decide and cut every region (``regions``: names, region files,
    :class:`Region` objects or ``"all"``); crops overlay the image exactly, nothing is written.
    ``boxes_only``: decide, cut nothing; the image files' voxels are then not read unless needed
    (the HU anatomy, ``labels``, a DICOM folder, a sheared grid) or ``read_voxels`` asks for them
    (QC pictures; the HU and finite-value checks, which :func:`crops_from_sidecar` runs otherwise):
    ``channels`` are then their :class:`Geometry`. ``prepared``: ``anatomy`` is an
    :class:`AnatomySource` prepared with this case already (the crop command prepares a batch at
    once); ``lazy``: unpadded crops as ``core.base.nifti.Crop`` boxes of the image, which a writer
    streams without a copy (``crop.image_crop()`` cuts one). ``atlas``: an :class:`Atlas`, an atlas
    file or imported set name; None: the shipped atlas, or the imported set's when every region is
    named ``SET:REGION`` (as the commands do)."""
    name = _case_name(image, case)
    warnings = WarningLog(case=name)
    atlas, regions = _atlas_and_regions(atlas, regions, warnings)
    atlas.warm_up()                                    # the atlas side of the registration, while files are read
    source = anatomy_source(anatomy, atlas=atlas)
    t0 = time.perf_counter()
    grids_only = boxes_only and not read_voxels and labels is None and not source.reads_voxels
    channels = (_read_grids(image) if grids_only else None) or read_channels(image, hu_check, allow_nonfinite,
                                                                              warnings)
    seconds = {"read_image": time.perf_counter() - t0}
    t0 = time.perf_counter()
    anat = _load_anatomy(source, name, image, channels[0], warnings, prepared)
    lab = None
    if labels is not None:
        lab_img = labels if isinstance(labels, sitk.Image) else read_image(labels, label=True, warnings=warnings)
        lab = match_label_to_image(lab_img, channels[0], "label map" if isinstance(labels, sitk.Image)
                                   else f"label map {Path(labels).name}", warnings)
    seconds["read_anatomy_labels"] = time.perf_counter() - t0
    result = crop_case(name, channels, anat, regions, atlas, Policy(on_untrusted, margin_mm, z_only),
                       CutOptions(boxes_only, pad, fill_value, lazy), lab, warnings=warnings)
    return replace(result, seconds={**seconds, **result.seconds})


def _atlas_and_regions(atlas: Atlas | str | None, regions, warnings: WarningLog) -> tuple[Atlas, list[Region]]:
    """The atlas (one given as an :class:`Atlas` as is; else loaded: the named file or set, or for
    regions all named ``SET:REGION`` that set's atlas, else the shipped one) and the regions, with a
    warning for a region defined on another atlas (a caller's own Atlas: the caller's check)."""
    if isinstance(atlas, Atlas):
        return atlas, _regions(regions)
    items = [regions] if isinstance(regions, (str, Region)) else list(regions)
    names = [r for r in items if isinstance(r, str)]
    loaded = Atlas.load(atlas_named_by(names if len(names) == len(items) else [], atlas))
    out = _regions(regions)
    for r in out:
        check_region_atlas(r, loaded.atlas_id, warnings)
    return loaded, out


def crops_from_sidecar(sidecar: str | Path | CaseRecord, image: ImageLike, regions: list[str] | None = None,
                       hu_check: bool = True, allow_nonfinite: bool = False) -> dict[str, list[sitk.Image]]:
    """Cut the crops a sidecar describes from the image it was written for (e.g. with
    ``--boxes_only``), on the fly, without locating again: region name -> one crop per usable box
    (padded as the command would with ``--pad``), or the whole image for ``untrusted: whole image``;
    regions skipped or outside the field of view give none. The image is checked as the crop
    command checks it (:func:`read_channels`); one on another grid than the sidecar's is refused
    (its index boxes would cut the wrong voxels)."""
    from .core.outputs.sidecar import read_sidecar
    record = sidecar if isinstance(sidecar, CaseRecord) else read_sidecar(Path(sidecar))
    if record is None:
        raise CTARRError(f"{sidecar}: not a sidecar of this version of nnunet-ctarr")
    img = read_channels(image, hu_check, allow_nonfinite)[0]
    if record.image is None or not Geometry.of(img).same_grid(Geometry(**record.image)):
        raise CTARRError(f"the image is not on the grid the sidecar of case {record.case} was written for "
                         f"({Geometry.of(img).describe()} vs {record.image})")
    pad = bool(record.settings.get("pad"))
    fill = record.settings.get("fill_value")
    fill = float(sitk.GetArrayViewFromImage(img).min()) if fill is None else float(fill)
    out = {}
    for name, rec in record.regions.items():
        if regions is not None and name not in regions:
            continue
        if rec.status is Status.WHOLE:
            out[name] = [img]
        elif rec.status in (Status.CROPPED, Status.ANYWAY):
            out[name] = [crop_image(img, _box(b), pad, fill) for b in rec.boxes if b["status"] != "outside"]
    return out


def _box(d: dict):
    """A sidecar box as the :class:`BoxPlan` that cuts it."""
    import numpy as np

    from .core.regions.cropping import BoxPlan
    try:
        return BoxPlan(d["box"], np.array([d["atlas_min_mm"], d["atlas_max_mm"]]),
                       np.array([d["world_min_mm_lps"], d["world_max_mm_lps"]]), np.array(d["index_start_xyz"]),
                       np.array(d["index_stop_xyz"]), np.array(d["unclipped_index_start_xyz"]),
                       np.array(d["unclipped_index_stop_xyz"]), d["status"], d["fraction_of_box_inside_image"])
    except (KeyError, TypeError, ValueError) as e:
        raise CTARRError(f"a box of the sidecar is damaged ({type(e).__name__}: {e})") from None
