"""The preprocessing hook: nnU-Net's preprocessing, run on the CTARR crop of the raw case.

:class:`CTARRPreprocessor` (a ``DefaultPreprocessor``) cuts the raw arrays to the task's index
box before nnU-Net's own cropping, normalisation and resampling. For ``paste="full"`` it then
rewrites ``bbox_used_for_cropping`` and ``shape_before_cropping`` to the full image, so that
nnU-Net's own export pastes segmentation *and* probabilities back (background probability 1
outside) with the full image's geometry; for ``paste="crop"`` the output stays the crop (with
the crop's own origin) and is merged by :mod:`.export`.

For one nnU-Net run the predictor installs a :class:`CTARRConfigurationManager` holding that run's
tasks, a read-only mapping from the absolute path of a case's first file (what nnU-Net hands the
preprocessor) to its task, pickled with the manager to nnU-Net's preprocessing workers; the npy
entry points put the task into the image properties instead.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from functools import partial

import numpy as np
from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

from ..core.base.errors import CTARRError
from ..core.base.geometry import Geometry
from .plans import CropTask

TASK_KEY = "ctarr_task"


class CTARRPreprocessor(DefaultPreprocessor):
    """Crops the raw case to its CTARR task, then runs nnU-Net's preprocessing on the crop."""

    def __init__(self, verbose: bool = True, tasks: Mapping[str, CropTask] | None = None):
        super().__init__(verbose=verbose)
        self.tasks = tasks or {}
        self._key: str | None = None

    def run_case(self, image_files, seg_file, plans_manager, configuration_manager, dataset_json):
        self._key = os.path.abspath(image_files[0])
        try:
            return super().run_case(image_files=image_files, seg_file=seg_file, plans_manager=plans_manager,
                                    configuration_manager=configuration_manager, dataset_json=dataset_json)
        finally:
            self._key = None

    def run_case_npy(self, data, seg, properties, plans_manager, configuration_manager, dataset_json):
        task = properties.pop(TASK_KEY, None) or self.tasks.get(self._key)
        if task is None:
            return super().run_case_npy(data=data, seg=seg, properties=properties, plans_manager=plans_manager,
                                        configuration_manager=configuration_manager, dataset_json=dataset_json)
        if plans_manager.image_reader_writer_class.__name__ != "SimpleITKIO":
            raise CTARRError("CTARR cropping needs a model whose image reader is SimpleITKIO (axis order of "
                             f"the stored image); this model uses {plans_manager.image_reader_writer_class.__name__}")
        full_zyx = tuple(data.shape[1:])
        if full_zyx != task.image.shape_zyx:
            raise CTARRError(f"CTARR plan was made for an image of size {task.image.size_xyz}, got {full_zyx[::-1]}")
        sl = (slice(None),) + Geometry.slices_zyx(task.start_xyz, task.stop_xyz)
        d, s, p = super().run_case_npy(data=data[sl], seg=None if seg is None else seg[sl], properties=properties,
                                       plans_manager=plans_manager, configuration_manager=configuration_manager,
                                       dataset_json=dataset_json)
        tf = list(plans_manager.transpose_forward)
        if task.paste == "full":
            start = np.array(task.start_xyz[::-1])[tf]
            p["bbox_used_for_cropping"] = [[int(a + o), int(b + o)]
                                           for (a, b), o in zip(p["bbox_used_for_cropping"], start)]
            p["shape_before_cropping"] = tuple(int(v) for v in np.array(full_zyx)[tf])
        elif "sitk_stuff" in p:                               # output stays the crop: its own origin
            crop = task.image.sub_box(task.start_xyz, task.stop_xyz)
            p["sitk_stuff"] = dict(p["sitk_stuff"], origin=crop.origin_xyz)
        p["ctarr_box"] = {"start_xyz": list(task.start_xyz), "stop_xyz": list(task.stop_xyz)}
        return d, s, p


class CTARRConfigurationManager(ConfigurationManager):
    """A ConfigurationManager whose preprocessor is the CTARR one, with one run's crop tasks."""

    def __init__(self, configuration_dict: dict, tasks: Mapping[str, CropTask] | None = None):
        super().__init__(configuration_dict)
        self.ctarr_tasks: Mapping[str, CropTask] = dict(tasks or {})

    @property
    def preprocessor_class(self):
        return partial(CTARRPreprocessor, tasks=self.ctarr_tasks)
