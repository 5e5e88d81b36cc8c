"""nnU-Net inference on the CTARR region only, pasted back to full size with exact geometry.

How it hooks into nnU-Net 2.8 (no nnU-Net code is copied):

* Before nnU-Net runs, every case is localised (anatomy -> registration -> region boxes) in the
  main process; the result is a small picklable *crop plan* per case.
* :class:`CTARRPreprocessor` (a ``DefaultPreprocessor``) crops the raw arrays to the plan's
  index box before nnU-Net's own preprocessing, then rewrites ``shape_before_cropping`` and
  ``bbox_used_for_cropping`` to the full image, so nnU-Net's own export pastes segmentation
  *and* probabilities back (background probability 1 outside) with the full image's geometry.
* The plans reach the (spawned) preprocessing workers inside a
  :class:`CTARRConfigurationManager`, whose ``preprocessor_class`` returns the CTARR
  preprocessor; for the npy entry points they travel in the image properties.
* The region's boxes are fitted to the model's sliding-window tiles first (merged when that
  needs no more tiles, grown with real image up to the size their tiles cover anyway; see
  :mod:`nnunet_ctarr.tiling`), unless ``fit_tiles=False``.
* Crops that stay separate (kidneys with a small patch) are run as one pseudo-case per crop
  whose output stays a crop; the crops are merged into the full image, each voxel taking the
  crop whose most likely foreground class is most probable.
"""
from __future__ import annotations

import copy
import os
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import save_pickle
from nnunetv2.configuration import default_num_processes
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

from .atlas import Atlas
from .cropping import CropPlan, index_union_mask
from .errors import CTARRError, WarningLog
from .io import ImageHeader
from .pipeline import Localisation, check_trusted, locate, plan_region
from .registration import RegistrationSettings
from .regions import Region
from .tiling import TileGeometry, fit_boxes

# ----------------------------------------------------------------------------- preprocessing
class CTARRPreprocessor(DefaultPreprocessor):
    """Crops the raw case to its CTARR box, then runs nnU-Net's preprocessing on the crop."""

    def __init__(self, verbose: bool = True, plans_by_key: dict | None = None):
        super().__init__(verbose)
        self.plans_by_key = plans_by_key or {}
        self._key: str | None = None

    def run_case(self, image_files, seg_file, plans_manager, configuration_manager, dataset_json):
        self._key = os.path.abspath(image_files[0])
        try:
            return super().run_case(image_files, seg_file, plans_manager, configuration_manager, dataset_json)
        finally:
            self._key = None

    def run_case_npy(self, data, seg, properties, plans_manager, configuration_manager, dataset_json):
        plan = properties.pop("ctarr_plan", None) or self.plans_by_key.get(self._key)
        if not plan or plan["mode"] != "crop":
            return super().run_case_npy(data, seg, properties, plans_manager, configuration_manager, dataset_json)
        if plans_manager.image_reader_writer_class.__name__ != "SimpleITKIO":
            raise CTARRError("CTARR cropping needs a model whose image reader is SimpleITKIO (axis order of "
                             f"the stored image); this model uses {plans_manager.image_reader_writer_class.__name__}")
        (x0, y0, z0), (x1, y1, z1) = plan["start_xyz"], plan["stop_xyz"]
        full_zyx = data.shape[1:]
        if tuple(full_zyx) != tuple(plan["size_xyz"][::-1]):
            raise CTARRError(f"CTARR plan was made for an image of size {plan['size_xyz']}, got {full_zyx[::-1]}")
        sl = (slice(None), slice(z0, z1), slice(y0, y1), slice(x0, x1))
        d, s, p = super().run_case_npy(data[sl], None if seg is None else seg[sl], properties, plans_manager,
                                       configuration_manager, dataset_json)
        tf = list(plans_manager.transpose_forward)
        if plan["paste"] == "full":
            start = np.array([z0, y0, x0])[tf]
            p["bbox_used_for_cropping"] = [[int(a + o), int(b + o)] for (a, b), o in zip(p["bbox_used_for_cropping"], start)]
            p["shape_before_cropping"] = tuple(int(v) for v in np.array(full_zyx)[tf])
        elif "sitk_stuff" in p:                               # output stays the crop: its own origin
            p["sitk_stuff"] = dict(p["sitk_stuff"], origin=tuple(plan["crop_origin"]))
        p["ctarr_box"] = {"start_xyz": list(plan["start_xyz"]), "stop_xyz": list(plan["stop_xyz"])}
        return d, s, p


class CTARRConfigurationManager(ConfigurationManager):
    """A ConfigurationManager that hands the CTARR preprocessor (with the crop plans) to
    nnU-Net's workers; pickled to spawned processes with the plans inside."""

    def __init__(self, configuration_dict: dict, plans_by_key: dict):
        super().__init__(configuration_dict)
        self.ctarr_plans = plans_by_key

    @property
    def preprocessor_class(self):
        return partial(CTARRPreprocessor, plans_by_key=self.ctarr_plans)


# ----------------------------------------------------------------------------- merging
def merge_box_probabilities(full_shape_zyx, boxes: list[tuple[np.ndarray, list, list]], n_classes: int,
                            keep_probabilities: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Merge per-box probabilities (C, z, y, x) into the full image.

    Each voxel takes the probabilities of the box whose most likely foreground class is most
    probable there; outside all boxes the background probability is 1. Returns (confidence map
    of the winning box, merged probabilities or None)."""
    conf = np.full(full_shape_zyx, -1.0, np.float32)
    probs = None
    if keep_probabilities:
        probs = np.zeros((n_classes,) + tuple(full_shape_zyx), np.float32)
        probs[0] = 1.0
    winner = np.full(full_shape_zyx, -1, np.int16)
    for k, (p, start, stop) in enumerate(boxes):
        sl = (slice(start[2], stop[2]), slice(start[1], stop[1]), slice(start[0], stop[0]))
        c = p[1:].max(0) if p.shape[0] > 1 else p[0]
        better = c > conf[sl]
        conf[sl] = np.where(better, c, conf[sl])
        winner[sl] = np.where(better, k, winner[sl])
        if probs is not None:
            probs[(slice(None),) + sl] = np.where(better[None], p, probs[(slice(None),) + sl])
    return winner, probs


# ----------------------------------------------------------------------------- predictor
class nnUNetPredictorCTARR(nnUNetPredictor):
    """``nnUNetPredictor`` that predicts only inside a CTARR region.

    Call :meth:`ctarr_setup` after ``initialize_from_trained_model_folder``; the usual
    ``predict_from_files``, ``predict_from_files_sequential``, ``predict_from_list_of_npy_arrays``
    and ``predict_single_npy_array`` then work as in nnU-Net, with full-size outputs.
    """

    def ctarr_setup(self, region: Region, anatomy_source, atlas: Atlas | None = None, margin_mm: float = 0.0,
                    on_miss: str = "full", registration: RegistrationSettings | None = None,
                    sidecar_folder: str | None = None, qc_folder: str | None = None, fit_tiles: bool = True) -> None:
        """``sidecar_folder``: write ``<case>.ctarr.json`` there; ``qc_folder``: QC pictures;
        ``fit_tiles``: merge and grow the crops to the model's sliding-window tiles at no extra
        network cost (see :mod:`nnunet_ctarr.tiling`); False crops exactly the region boxes."""
        if on_miss not in ("full", "empty"):
            raise CTARRError("on_miss must be 'full' or 'empty'")
        self.ctarr_region = region
        self.ctarr_anatomy = anatomy_source
        self.ctarr_atlas = atlas or Atlas.load()
        self.ctarr_margin = margin_mm
        self.ctarr_on_miss = on_miss
        self.ctarr_registration = registration or RegistrationSettings()
        self.ctarr_sidecar_folder = sidecar_folder
        self.ctarr_qc_folder = qc_folder
        self.ctarr_fit_tiles = fit_tiles
        self.ctarr_reports: dict[str, dict] = {}

    # ---- localisation -------------------------------------------------------------------
    def _ctarr_locate(self, case: str, image, warnings: WarningLog) -> Localisation:
        """Anatomy -> atlas registration for one case (a subclass may return a shared result)."""
        anatomy = self.ctarr_anatomy.load(case, warnings)
        return locate(image, anatomy, self.ctarr_atlas, self.ctarr_registration, warnings)

    def _ctarr_localise(self, case: str, image: sitk.Image) -> dict:
        """Crop plan for one case: {'mode': crop|full|empty, 'boxes': [...], 'report': {...}}."""
        t0 = time.perf_counter()
        warnings = WarningLog()
        report: dict = {"case": case, "region": self.ctarr_region.name, "warnings": warnings}
        size = list(image.GetSize())
        try:
            loc = self._ctarr_locate(case, image, warnings)
            report["registration"] = loc.registration.to_dict()
            check_trusted(loc)
            plan = plan_region(image, loc, self.ctarr_region, self.ctarr_margin, warnings=warnings)
            report["boxes"] = [b.to_dict() for b in plan.boxes]
            boxes = self._ctarr_crops(plan, image)
            report["crops"] = [{"index_start_xyz": b["start_xyz"], "index_stop_xyz": b["stop_xyz"],
                                "size_xyz": (np.array(b["stop_xyz"]) - b["start_xyz"]).tolist(),
                                "region_boxes": b["region_boxes"], "tiles": b["tiles"]} for b in boxes]
            for b in boxes:
                b.update(crop_origin=list(image.TransformIndexToPhysicalPoint([int(v) for v in b["start_xyz"]])),
                         size_xyz=size)
            if not boxes:
                mode = self.ctarr_on_miss
                warnings.warn(f"region '{self.ctarr_region.name}' lies outside the field of view: "
                              + ("predicting the full volume" if mode == "full" else "writing an empty segmentation"))
            else:
                mode = "crop"
                crop_mask = index_union_mask(size, [(b["start_xyz"], b["stop_xyz"]) for b in boxes])
                report["voxel_fraction"] = round(float(crop_mask.mean()), 5)
                report["region_voxel_fraction"] = round(plan.voxel_fraction(), 5)
                report["tiles_full_image"] = self._ctarr_tiles(image).tiles(size)
            if self.ctarr_qc_folder:
                from .qc import render_qc
                Path(self.ctarr_qc_folder).mkdir(parents=True, exist_ok=True)
                render_qc(Path(self.ctarr_qc_folder) / f"{case}_ctarr_qc.png", image, loc.anatomy_volume, plan,
                          f"{case} | {self.ctarr_region.name} | {loc.transform.orientation_text}")
        except CTARRError as e:
            warnings.warn(f"{case}: CTARR localisation not trusted ({e}); predicting the full volume")
            mode, boxes = "full", []
        report["mode"] = mode
        report["seconds_ctarr"] = round(time.perf_counter() - t0, 4)
        report["warnings"] = list(warnings)
        return {"mode": mode, "boxes": boxes, "size_xyz": size, "report": report}

    def _ctarr_tiles(self, image) -> TileGeometry:
        return TileGeometry.from_nnunet(self.configuration_manager, self.plans_manager, image.GetSpacing(),
                                        self.tile_step_size)

    def _ctarr_crops(self, plan: CropPlan, image) -> list[dict]:
        """Index boxes to predict: the region's boxes inside the image, fitted to the tiles."""
        usable = plan.usable
        geom = self._ctarr_tiles(image)
        if not self.ctarr_fit_tiles:
            return [{"start_xyz": b.start_xyz.tolist(), "stop_xyz": b.stop_xyz.tolist(), "region_boxes": [b.index],
                     "tiles": geom.tiles(b.size_xyz)} for b in usable]
        crops = fit_boxes([(b.start_xyz, b.stop_xyz) for b in usable], image.GetSize(), geom)
        for c in crops:
            c["region_boxes"] = [usable[k].index for k in c["region_boxes"]]
        return crops

    def _ctarr_write_sidecar(self, case: str, report: dict) -> None:
        self.ctarr_reports[case] = report
        if self.ctarr_sidecar_folder:
            from .io import write_json
            write_json(Path(self.ctarr_sidecar_folder) / f"{case}.ctarr.json", report)

    def _ctarr_plan_files(self, lists: list[list[str]], outs: list[str]):
        """Localise every case (named after its output file); returns one plan per case."""
        cases = {Path(out).name: files for files, out in zip(lists, outs)}
        self.ctarr_anatomy.prepare(cases)
        plans = []
        for case, files in cases.items():
            image = sitk.ReadImage(files[0]) if self.ctarr_qc_folder else ImageHeader(files[0])
            plan = self._ctarr_localise(case, image)
            plan["case"] = case
            plan["header"] = (image.GetSize(), image.GetOrigin(), image.GetSpacing(), image.GetDirection())
            plans.append(plan)
        return plans

    # ---- file entry points -----------------------------------------------------------------
    def predict_from_files(self, list_of_lists_or_source_folder, output_folder_or_list_of_truncated_output_files,
                           save_probabilities: bool = False, overwrite: bool = True,
                           num_processes_preprocessing: int = default_num_processes,
                           num_processes_segmentation_export: int = default_num_processes,
                           folder_with_segs_from_prev_stage: str = None, num_parts: int = 1, part_id: int = 0):
        def run(lists, outs, probs, prev):
            return super(nnUNetPredictorCTARR, self).predict_from_files(
                lists, outs, probs, True, num_processes_preprocessing, num_processes_segmentation_export,
                prev, 1, 0)
        return self._ctarr_run_files(run, list_of_lists_or_source_folder,
                                     output_folder_or_list_of_truncated_output_files, save_probabilities, overwrite,
                                     folder_with_segs_from_prev_stage, num_parts, part_id)

    def predict_from_files_sequential(self, list_of_lists_or_source_folder,
                                      output_folder_or_list_of_truncated_output_files,
                                      save_probabilities: bool = False, overwrite: bool = True,
                                      folder_with_segs_from_prev_stage: str = None):
        def run(lists, outs, probs, prev):
            return super(nnUNetPredictorCTARR, self).predict_from_files_sequential(lists, outs, probs, True, prev)
        return self._ctarr_run_files(run, list_of_lists_or_source_folder,
                                     output_folder_or_list_of_truncated_output_files, save_probabilities, overwrite,
                                     folder_with_segs_from_prev_stage, 1, 0)

    def _ctarr_run_files(self, run, source, outputs, save_probabilities, overwrite, prev_folder, num_parts, part_id):
        if not hasattr(self, "ctarr_region"):
            raise CTARRError("call ctarr_setup(...) before predicting")
        lists, outs, prevs = self._manage_input_and_output_lists(source, outputs, prev_folder, overwrite, part_id,
                                                                 num_parts, save_probabilities)
        if not lists:
            return
        if outs is None:
            raise CTARRError("nnUNetPredictorCTARR writes files; give an output folder or output file names")
        ending = self.dataset_json["file_ending"]
        for o in outs:
            os.makedirs(os.path.dirname(o) or ".", exist_ok=True)
        plans = self._ctarr_plan_files(lists, outs)
        tmp = Path(tempfile.mkdtemp(prefix="ctarr_predict_"))
        original_cm = self.configuration_manager
        try:
            single_lists, single_outs, single_prev, plans_by_key = [], [], [], {}
            box_lists, box_outs, box_prev, box_jobs = [], [], [], []
            for files, out, prev, plan in zip(lists, outs, prevs, plans):
                if plan["mode"] == "empty":
                    self._ctarr_write_empty(plan, out, ending, save_probabilities)
                elif plan["mode"] == "full" or len(plan["boxes"]) == 1:
                    if plan["mode"] == "crop":
                        plans_by_key[os.path.abspath(files[0])] = dict(plan["boxes"][0], mode="crop", paste="full")
                    single_lists.append(files), single_outs.append(out), single_prev.append(prev)
                else:
                    for k, box in enumerate(plan["boxes"]):
                        links = []
                        for c, f in enumerate(files):
                            link = tmp / "in" / f"{plan['case']}__box{k}_{c:04d}{ending}"
                            link.parent.mkdir(parents=True, exist_ok=True)
                            _link_or_copy(f, link)
                            links.append(str(link))
                        plans_by_key[os.path.abspath(links[0])] = dict(box, mode="crop", paste="crop")
                        box_lists.append(links), box_outs.append(str(tmp / "out" / f"{plan['case']}__box{k}"))
                        bprev = None
                        if prev:                       # previous-stage segmentation under the pseudo-case name
                            plink = tmp / "prev" / f"{plan['case']}__box{k}{ending}"
                            plink.parent.mkdir(parents=True, exist_ok=True)
                            _link_or_copy(prev, plink)
                            bprev = str(plink)
                        box_prev.append(bprev)
                    box_jobs.append((plan, out))
            self.configuration_manager = CTARRConfigurationManager(original_cm.configuration, plans_by_key)
            if single_lists:
                run(single_lists, single_outs, save_probabilities, _prev_folder(single_prev))
            if box_lists:
                (tmp / "out").mkdir(parents=True, exist_ok=True)
                run(box_lists, box_outs, True, _prev_folder(box_prev))
                for plan, out in box_jobs:
                    self._ctarr_merge_box_files(plan, out, ending, tmp / "out", save_probabilities)
            for plan in plans:
                self._ctarr_write_sidecar(plan["case"], plan["report"])
        finally:
            self.configuration_manager = original_cm
            shutil.rmtree(tmp, ignore_errors=True)
        return None

    # ---- output writing ------------------------------------------------------------------
    def _ctarr_reference(self, plan) -> sitk.Image:
        size, origin, spacing, direction = plan["header"]
        ref = sitk.Image([int(v) for v in size], sitk.sitkUInt8)
        ref.SetOrigin(origin), ref.SetSpacing(spacing), ref.SetDirection(direction)
        return ref

    def _ctarr_write_seg(self, seg_zyx: np.ndarray, plan, path: str) -> None:
        img = sitk.GetImageFromArray(seg_zyx.astype(np.uint8 if seg_zyx.max() < 255 else np.uint16))
        img.CopyInformation(self._ctarr_reference(plan))
        sitk.WriteImage(img, path, True)

    def _ctarr_write_probabilities(self, probs: np.ndarray, plan, out: str) -> None:
        size, origin, spacing, direction = plan["header"]
        np.savez_compressed(out + ".npz", probabilities=probs)
        save_pickle({"sitk_stuff": {"spacing": spacing, "origin": origin, "direction": direction},
                     "spacing": list(spacing)[::-1], "shape_before_cropping": tuple(size[::-1]),
                     "ctarr": {"mode": plan["mode"], "boxes": plan["boxes"]}}, out + ".pkl")

    def _ctarr_empty(self, shape_zyx) -> tuple[np.ndarray, np.ndarray]:
        """All-background segmentation and probabilities (background 1) of a full image."""
        probs = np.zeros((self.label_manager.num_segmentation_heads,) + tuple(shape_zyx), np.float16)
        probs[0] = 1
        return np.zeros(tuple(shape_zyx), np.uint8), probs

    def _ctarr_write_empty(self, plan, out: str, ending: str, save_probabilities: bool) -> None:
        seg, probs = self._ctarr_empty(plan["header"][0][::-1])
        self._ctarr_write_seg(seg, plan, out + ending)
        if save_probabilities:
            self._ctarr_write_probabilities(probs, plan, out)

    def _ctarr_merge_box_files(self, plan, out: str, ending: str, folder: Path, save_probabilities: bool) -> None:
        shape = tuple(plan["header"][0][::-1])
        boxes = []
        for k, box in enumerate(plan["boxes"]):
            p = np.load(folder / f"{plan['case']}__box{k}.npz")["probabilities"]
            boxes.append((p, box["start_xyz"], box["stop_xyz"]))
        seg, probs = self._ctarr_merge(shape, boxes)
        self._ctarr_write_seg(seg, plan, out + ending)
        if save_probabilities:
            self._ctarr_write_probabilities(probs, plan, out)

    def _ctarr_merge(self, shape, boxes):
        n = self.label_manager.num_segmentation_heads
        _, probs = merge_box_probabilities(shape, boxes, n, keep_probabilities=True)
        seg = self.label_manager.convert_probabilities_to_segmentation(probs)
        seg = seg.cpu().numpy() if hasattr(seg, "cpu") else np.asarray(seg)
        return seg.astype(np.uint8 if seg.max() < 255 else np.uint16), probs

    # ---- npy entry points ------------------------------------------------------------------
    def predict_single_npy_array(self, input_image: np.ndarray, image_properties: dict,
                                 segmentation_previous_stage: np.ndarray = None, output_file_truncated: str = None,
                                 save_or_return_probabilities: bool = False, anatomy=None, case: str = "case"):
        """As nnU-Net's, plus ``anatomy`` (label image or path) for this image. ``image_properties``
        must hold SimpleITKIO's ``sitk_stuff`` (geometry)."""
        res = self._ctarr_npy([input_image], [segmentation_previous_stage], [image_properties],
                              [output_file_truncated], save_or_return_probabilities, [anatomy], [case],
                              self._ctarr_single_runner())
        return None if res is None else res[0]

    def _ctarr_single_runner(self):
        def run(imgs, segs, props, ofns, probs):
            return [super(nnUNetPredictorCTARR, self).predict_single_npy_array(i, p, s, o, probs)
                    for i, s, p, o in zip(imgs, segs, props, ofns)]
        return run

    def predict_from_list_of_npy_arrays(self, image_or_list_of_images, segs_from_prev_stage_or_list_of_segs_from_prev_stage,
                                        properties_or_list_of_properties, truncated_ofname, num_processes: int = 3,
                                        save_probabilities: bool = False,
                                        num_processes_segmentation_export: int = default_num_processes,
                                        anatomy=None, cases=None):
        imgs = image_or_list_of_images if isinstance(image_or_list_of_images, list) else [image_or_list_of_images]
        props = properties_or_list_of_properties if isinstance(properties_or_list_of_properties, list) \
            else [properties_or_list_of_properties]
        segs = segs_from_prev_stage_or_list_of_segs_from_prev_stage
        segs = segs if isinstance(segs, list) else [segs] * len(imgs)
        ofn = truncated_ofname if isinstance(truncated_ofname, list) else [truncated_ofname] * len(imgs)
        anat = anatomy if isinstance(anatomy, list) else [anatomy] * len(imgs)
        cases = cases or [f"case{i}" for i in range(len(imgs))]

        def run(i, s, p, o, probs):
            return super(nnUNetPredictorCTARR, self).predict_from_list_of_npy_arrays(
                i, s, p, o, num_processes, probs, num_processes_segmentation_export)
        return self._ctarr_npy(imgs, segs, props, ofn, save_probabilities, anat, cases, run)

    def _ctarr_npy(self, imgs, segs, props, ofns, save_probabilities, anatomy, cases, run):
        original_cm = self.configuration_manager
        self.configuration_manager = CTARRConfigurationManager(original_cm.configuration, {})
        try:
            return self._ctarr_npy_impl(imgs, segs, props, ofns, save_probabilities, anatomy, cases, run)
        finally:
            self.configuration_manager = original_cm

    def _ctarr_npy_impl(self, imgs, segs, props, ofns, save_probabilities, anatomy, cases, run):
        results: list = [None] * len(imgs)
        single, multi = [], []
        for idx, (img, p, anat, case) in enumerate(zip(imgs, props, anatomy, cases)):
            if "sitk_stuff" not in p:
                raise CTARRError("image properties need 'sitk_stuff' (origin/spacing/direction) for CTARR")
            ref = sitk.GetImageFromArray(np.zeros(img.shape[1:], np.uint8))
            st = p["sitk_stuff"]
            ref.SetOrigin(st["origin"]), ref.SetSpacing(st["spacing"]), ref.SetDirection(st["direction"])
            source = anat if hasattr(anat, "load") else _InMemoryAnatomy(anat, case)
            saved, self.ctarr_anatomy = self.ctarr_anatomy, source
            try:
                plan = self._ctarr_localise(case, ref)
            finally:
                self.ctarr_anatomy = saved
            plan["case"], plan["header"] = case, (ref.GetSize(), ref.GetOrigin(), ref.GetSpacing(), ref.GetDirection())
            self._ctarr_write_sidecar(case, plan["report"])
            if plan["mode"] == "empty":
                if ofns[idx]:
                    self._ctarr_write_empty(plan, ofns[idx], self.dataset_json["file_ending"], save_probabilities)
                else:
                    seg, probs = self._ctarr_empty(img.shape[1:])
                    results[idx] = (seg, probs.astype(np.float32)) if save_probabilities else seg
            elif plan["mode"] == "full" or len(plan["boxes"]) == 1:
                p = copy.deepcopy(p)
                if plan["mode"] == "crop":
                    p["ctarr_plan"] = dict(plan["boxes"][0], mode="crop", paste="full")
                single.append((idx, img, segs[idx], p, ofns[idx]))
            else:
                multi.append((idx, img, segs[idx], p, ofns[idx], plan))
        if single:
            idxs, a, s, p, o = zip(*single)
            out = run(list(a), list(s), list(p), list(o), save_probabilities)
            for i, r in zip(idxs, out or [None] * len(idxs)):
                results[i] = r
        for idx, img, seg, p, ofn, plan in multi:
            items = []
            for box in plan["boxes"]:
                pb = copy.deepcopy(p)
                pb["ctarr_plan"] = dict(box, mode="crop", paste="crop")
                items.append(pb)
            out = run([img] * len(items), [seg] * len(items), items, [None] * len(items), True)
            boxes = [(r[1], b["start_xyz"], b["stop_xyz"]) for r, b in zip(out, plan["boxes"])]
            merged_seg, probs = self._ctarr_merge(img.shape[1:], boxes)
            if ofn:
                self._ctarr_write_seg(merged_seg, plan, ofn + self.dataset_json["file_ending"])
                if save_probabilities:
                    self._ctarr_write_probabilities(probs, plan, ofn)
            else:
                results[idx] = (merged_seg, probs) if save_probabilities else merged_seg
        return results if any(o is None for o in ofns) else None


class _InMemoryAnatomy:
    """Anatomy given directly to the npy entry points (a label image or a path)."""

    def __init__(self, anatomy, case: str):
        if anatomy is None:
            raise CTARRError(f"{case}: pass anatomy=... (label image or file) for the npy entry points")
        self.anatomy, self.case = anatomy, case

    def load(self, case: str, warnings: WarningLog):
        from .anatomy import AnatomyMasks, detect_scheme, load_anatomy
        if isinstance(self.anatomy, AnatomyMasks):
            return self.anatomy
        if isinstance(self.anatomy, sitk.Image):
            return AnatomyMasks.from_label_image(self.anatomy, detect_scheme(self.anatomy, None, warnings), warnings, case)
        return load_anatomy(self.anatomy, "auto", warnings)


def _prev_folder(prevs: list) -> str | None:
    """nnU-Net takes a folder of previous-stage segmentations; all entries share it."""
    prevs = [p for p in prevs if p]
    return os.path.dirname(prevs[0]) if prevs else None


def _link_or_copy(src: str, dst: Path) -> None:
    try:
        os.symlink(os.path.abspath(src), dst)
    except OSError:
        shutil.copyfile(src, dst)
