"""nnUNetPredictorCTARR: nnU-Net inference on the CTARR region only, full-size outputs.

How it hooks into nnU-Net 2.8 (no nnU-Net code is copied; tests/test_nnunet_contract.py checks
every signature, property and private hook used here):

1. every case is planned in the main process by :class:`.planner.CasePlanner` (:func:`.plans.plan_case`:
   anatomy -> registration -> the one decision -> region boxes fitted to the model's tiles) into a
   frozen :class:`.plans.CasePlan`;
2. :func:`.plans.split_jobs` turns the plans into nnU-Net cases: one per case with one crop or a
   full-volume fallback, one pseudo-case per crop for cases with several crops;
3. :class:`.preprocessing.CTARRPreprocessor` crops each case before nnU-Net's preprocessing, and
   nnU-Net's own export pastes it back; several crops are merged by :mod:`.export`.

A user error for a case (missing or unreadable anatomy) makes that case a ``failed`` plan: it is
logged, recorded in :attr:`ctarr_plans`, and not predicted; only an untrusted localisation falls
back (``on_untrusted``: the whole image by default).
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
from nnunetv2.configuration import default_num_processes
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

from ..core.anatomy.atlas import Atlas
from ..core.anatomy.sources import AnatomySource
from ..core.base.errors import CTARRError
from ..core.base.geometry import Geometry
from ..core.localise.decision import Policy, Status
from ..core.localise.settings import RegistrationSettings
from ..core.regions.region import Region
from .export import empty_outputs, merge_crops, write_outputs
from .nnunet_cases import as_list, prev_stage_folder, pseudo_case, with_task
from .planner import CasePlanner
from .plans import CasePlan, CTARRSettings, Job, split_jobs
from .preprocessing import CTARRConfigurationManager
from .tiling import TileGeometry

logger = logging.getLogger("nnunet_ctarr")


class nnUNetPredictorCTARR(nnUNetPredictor):
    """``nnUNetPredictor`` that predicts only inside a CTARR region.

    Call :meth:`ctarr_setup` after ``initialize_from_trained_model_folder``; the usual
    ``predict_from_files``, ``predict_from_files_sequential``, ``predict_from_list_of_npy_arrays``
    and ``predict_single_npy_array`` then work as in nnU-Net, with full-size outputs.
    """

    def ctarr_setup(self, region: Region, anatomy_source: AnatomySource, atlas: Atlas | None = None,
                    margin_mm: float = 0.0, on_untrusted: str = "whole",
                    registration: RegistrationSettings | None = None, sidecar_folder: str | None = None,
                    qc_folder: str | None = None, fit_tiles: bool = True) -> None:
        """``anatomy_source``: a :class:`core.anatomy.sources.AnatomySource` (or ``ModelAnatomy``);
        ``on_untrusted``: ``whole`` (predict the whole image), ``skip`` (no output) or ``anyway``
        (the crop); ``sidecar_folder``: write ``<case>.ctarr.json`` there; ``qc_folder``: QC pictures;
        ``fit_tiles``: merge and grow the crops to the model's sliding-window tiles at no extra network
        cost (:mod:`.tiling`); False crops exactly the region boxes."""
        settings = CTARRSettings(region=region, atlas=atlas or Atlas.load(), policy=Policy(on_untrusted, margin_mm),
                                 registration=registration or RegistrationSettings(), fit_tiles=fit_tiles,
                                 sidecar_folder=sidecar_folder, qc_folder=qc_folder)
        self.ctarr = CasePlanner(settings, anatomy_source, self._ctarr_tiles)

    @property
    def ctarr_plans(self) -> dict[str, CasePlan]:
        """Case -> its plan (status, crops, sidecar record), for every case predicted so far."""
        return self.ctarr.plans

    def ctarr_plan(self, case: str, geometry: Geometry, anatomy_source=None, image=None, locate_case=None) -> CasePlan:
        """Plan one case (:meth:`.planner.CasePlanner.plan`)."""
        if not hasattr(self, "ctarr"):
            raise CTARRError("call ctarr_setup(...) before predicting")
        return self.ctarr.plan(case, geometry, anatomy_source, image, locate_case)

    def _ctarr_tiles(self, geometry: Geometry) -> TileGeometry:
        return TileGeometry.from_nnunet(self.configuration_manager, self.plans_manager, geometry.spacing_xyz,
                                        self.tile_step_size)

    def _ctarr_emit(self, seg, probs, plan: CasePlan, ofn: str | None, save_probabilities: bool):
        """Write a case's outputs (``ofn`` given) or return them as nnU-Net's npy entry points do."""
        if ofn:
            write_outputs(seg, probs if save_probabilities else None, plan, ofn, self.dataset_json["file_ending"])
            return None
        return (seg, probs) if save_probabilities else seg

    def _ctarr_empty(self, plan: CasePlan, ofn: str | None, save_probabilities: bool):
        """Background everywhere (probabilities float32, written or returned)."""
        seg, probs = empty_outputs(self.label_manager.num_segmentation_heads, plan.geometry.shape_zyx)
        return self._ctarr_emit(seg, probs, plan, ofn, save_probabilities)

    # ---- file entry points -----------------------------------------------------------------
    def predict_from_files(self, list_of_lists_or_source_folder, output_folder_or_list_of_truncated_output_files,
                           save_probabilities: bool = False, overwrite: bool = True,
                           num_processes_preprocessing: int = default_num_processes,
                           num_processes_segmentation_export: int = default_num_processes,
                           folder_with_segs_from_prev_stage: str = None, num_parts: int = 1, part_id: int = 0):
        def run(lists, outs, probs, prev):
            return super(nnUNetPredictorCTARR, self).predict_from_files(
                list_of_lists_or_source_folder=lists, output_folder_or_list_of_truncated_output_files=outs,
                save_probabilities=probs, overwrite=True, num_processes_preprocessing=num_processes_preprocessing,
                num_processes_segmentation_export=num_processes_segmentation_export,
                folder_with_segs_from_prev_stage=prev, num_parts=1, part_id=0)
        return self._ctarr_run_files(run, list_of_lists_or_source_folder,
                                     output_folder_or_list_of_truncated_output_files, save_probabilities, overwrite,
                                     folder_with_segs_from_prev_stage, num_parts, part_id)

    def predict_from_files_sequential(self, list_of_lists_or_source_folder,
                                      output_folder_or_list_of_truncated_output_files,
                                      save_probabilities: bool = False, overwrite: bool = True,
                                      folder_with_segs_from_prev_stage: str = None):
        def run(lists, outs, probs, prev):
            return super(nnUNetPredictorCTARR, self).predict_from_files_sequential(
                list_of_lists_or_source_folder=lists, output_folder_or_list_of_truncated_output_files=outs,
                save_probabilities=probs, overwrite=True, folder_with_segs_from_prev_stage=prev)
        return self._ctarr_run_files(run, list_of_lists_or_source_folder,
                                     output_folder_or_list_of_truncated_output_files, save_probabilities, overwrite,
                                     folder_with_segs_from_prev_stage, 1, 0)

    def _ctarr_run_files(self, run, source, outputs, save_probabilities, overwrite, prev_folder, num_parts, part_id):
        lists, outs, prevs = self._manage_input_and_output_lists(
            list_of_lists_or_source_folder=source, output_folder_or_list_of_truncated_output_files=outputs,
            folder_with_segs_from_prev_stage=prev_folder, overwrite=overwrite, part_id=part_id, num_parts=num_parts,
            save_probabilities=save_probabilities)
        if not lists:
            return None
        if outs is None:
            raise CTARRError("nnUNetPredictorCTARR writes files; give an output folder or output file names")
        for o in outs:
            os.makedirs(os.path.dirname(o) or ".", exist_ok=True)
        self.ctarr.anatomy.prepare({Path(o).name: files for files, o in zip(lists, outs)})
        plans = [self.ctarr.plan_file(files[0], Path(o).name) for files, o in zip(lists, outs)]
        for plan, out in zip(plans, outs):
            if plan.predicts == "empty":
                self._ctarr_empty(plan, out, save_probabilities)
        single, boxes = split_jobs(plans)
        if single:
            tasks = {os.path.abspath(lists[j.case_index][0]): j.task for j in single if j.task}
            with self._ctarr_tasks(tasks):
                run([lists[j.case_index] for j in single], [outs[j.case_index] for j in single], save_probabilities,
                    prev_stage_folder([prevs[j.case_index] for j in single]))
        if boxes:
            with tempfile.TemporaryDirectory(prefix="ctarr_predict_") as tmp:
                self._ctarr_run_boxes(run, Path(tmp), boxes, plans, lists, outs, prevs, save_probabilities)
        ending = self.dataset_json["file_ending"]
        for plan, files, out in zip(plans, lists, outs):
            self.ctarr.record(plan, files, out + ending if plan.predicts != "nothing" else None)
        return None

    @contextlib.contextmanager
    def _ctarr_tasks(self, tasks: dict):
        """For one nnU-Net run: a configuration manager whose preprocessor crops each case to its
        task (found by the absolute path of the case's first file: what nnU-Net hands it)."""
        plain = self.configuration_manager
        self.configuration_manager = CTARRConfigurationManager(plain.configuration, tasks)
        try:
            yield
        finally:
            self.configuration_manager = plain

    def _ctarr_run_boxes(self, run, tmp: Path, boxes: list[Job], plans, lists, outs, prevs, save_probabilities):
        """One pseudo-case per crop (links to the case's files), predicted as crops and merged."""
        ending = self.dataset_json["file_ending"]
        tasks, files, names, prev = {}, [], [], []
        for j in boxes:
            name = f"{plans[j.case_index].case}__box{j.crop_index}"
            links, plink = pseudo_case(tmp, name, lists[j.case_index], prevs[j.case_index], ending)
            tasks[os.path.abspath(links[0])] = j.task
            files.append(links), names.append(str(tmp / "out" / name)), prev.append(plink)
        (tmp / "out").mkdir(parents=True, exist_ok=True)
        with self._ctarr_tasks(tasks):
            run(files, names, True, prev_stage_folder(prev))
        for i in sorted({j.case_index for j in boxes}):
            plan = plans[i]
            probs = [np.load(tmp / "out" / f"{plan.case}__box{k}.npz")["probabilities"] for k in range(len(plan.crops))]
            seg, merged = merge_crops(self.label_manager, plan, probs)
            self._ctarr_emit(seg, merged, plan, outs[i], save_probabilities)

    # ---- npy entry points ------------------------------------------------------------------
    def predict_single_npy_array(self, input_image: np.ndarray, image_properties: dict,
                                 segmentation_previous_stage: np.ndarray = None, output_file_truncated: str = None,
                                 save_or_return_probabilities: bool = False, anatomy=None, case: str = "case"):
        """As nnU-Net's, plus ``anatomy`` (label image, path or anatomy source) for this image.
        ``image_properties`` must hold SimpleITKIO's ``sitk_stuff`` (geometry). A case that cannot be
        predicted (unreadable anatomy, ...) raises :class:`CTARRError`; one skipped (``on_untrusted="skip"``)
        gives None."""
        plan = self.ctarr.plan_npy(input_image, image_properties, anatomy, case)
        if plan.status is Status.FAILED:
            raise CTARRError(f"{case}: {plan.error}")
        return self.ctarr_predict_planned([input_image], [segmentation_previous_stage], [image_properties],
                                          [output_file_truncated], [plan], save_or_return_probabilities)[0]

    def predict_from_list_of_npy_arrays(self, image_or_list_of_images,
                                        segs_from_prev_stage_or_list_of_segs_from_prev_stage,
                                        properties_or_list_of_properties, truncated_ofname, num_processes: int = 3,
                                        save_probabilities: bool = False,
                                        num_processes_segmentation_export: int = default_num_processes,
                                        anatomy=None, cases=None):
        """As nnU-Net's, plus ``anatomy`` (one per image) and ``cases`` (names for the log and sidecars).
        A case that fails (its error logged) or is skipped gives None; the others are predicted."""
        imgs = as_list(image_or_list_of_images)
        props = as_list(properties_or_list_of_properties)
        segs = as_list(segs_from_prev_stage_or_list_of_segs_from_prev_stage, len(imgs))
        ofns = as_list(truncated_ofname, len(imgs))
        anat = as_list(anatomy, len(imgs))
        cases = cases or [f"case{i}" for i in range(len(imgs))]
        plans = [self.ctarr.plan_npy(i, p, a, c) for i, p, a, c in zip(imgs, props, anat, cases)]

        def run(i, s, p, o, probs):
            return super(nnUNetPredictorCTARR, self).predict_from_list_of_npy_arrays(
                image_or_list_of_images=i, segs_from_prev_stage_or_list_of_segs_from_prev_stage=s,
                properties_or_list_of_properties=p, truncated_ofname=o, num_processes=num_processes,
                save_probabilities=probs, num_processes_segmentation_export=num_processes_segmentation_export)
        results = self.ctarr_predict_planned(imgs, segs, props, ofns, plans, save_probabilities, run)
        return results if any(o is None for o in ofns) else None

    def _ctarr_single_runner(self):
        def run(imgs, segs, props, ofns, probs):
            return [super(nnUNetPredictorCTARR, self).predict_single_npy_array(
                input_image=i, image_properties=p, segmentation_previous_stage=s, output_file_truncated=o,
                save_or_return_probabilities=probs) for i, s, p, o in zip(imgs, segs, props, ofns)]
        return run

    def ctarr_predict_planned(self, imgs, segs, props, ofns, plans: list[CasePlan], save_probabilities: bool,
                              run=None) -> list:
        """Predict arrays whose plans are made (the multi-model predictor plans with a shared
        localisation); ``run`` is the nnU-Net npy entry point used (default: single arrays)."""
        run = run or self._ctarr_single_runner()
        results: list = [None] * len(imgs)
        for i, plan in enumerate(plans):
            if plan.predicts == "empty":
                results[i] = self._ctarr_empty(plan, ofns[i], save_probabilities)
        single, boxes = split_jobs(plans)
        with self._ctarr_tasks({}):            # the npy entry points carry each task in the image properties
            if single:
                out = run([imgs[j.case_index] for j in single], [segs[j.case_index] for j in single],
                          [with_task(props[j.case_index], j.task) for j in single],
                          [ofns[j.case_index] for j in single], save_probabilities)
                for j, r in zip(single, out or [None] * len(single)):
                    results[j.case_index] = r
            for i in sorted({j.case_index for j in boxes}):
                jobs = [j for j in boxes if j.case_index == i]
                out = run([imgs[i]] * len(jobs), [segs[i]] * len(jobs), [with_task(props[i], j.task) for j in jobs],
                          [None] * len(jobs), True)
                seg, probs = merge_crops(self.label_manager, plans[i], [r[1] for r in out])
                results[i] = self._ctarr_emit(seg, probs, plans[i], ofns[i], save_probabilities)
        for plan in plans:
            self.ctarr.record(plan)
        return results

