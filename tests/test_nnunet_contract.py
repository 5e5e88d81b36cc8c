"""What nnunet-ctarr relies on in nnU-Net (2.8): signatures, properties and private hooks.

The predictor subclasses ``nnUNetPredictor`` and its preprocessing hook subclasses
``DefaultPreprocessor``; when any of this changes in a new nnU-Net release, this test fails
loudly and names it, before a silent misbehaviour could (pyproject bounds nnunetv2 to 2.8.x)."""

from __future__ import annotations

import inspect

import numpy as np
from conftest import ABDOMEN
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window
from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
from nnunetv2.utilities.label_handling.label_handling import LabelManager
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

from nnunet_ctarr.inference.predictor import nnUNetPredictorCTARR
from nnunet_ctarr.inference.preprocessing import CTARRConfigurationManager, CTARRPreprocessor


def params(fn) -> list[str]:
    return [p for p in inspect.signature(fn).parameters if p != "self"]


CALLED = {  # every nnU-Net function called with keyword arguments, and the names used
    nnUNetPredictor.predict_from_files: [
        "list_of_lists_or_source_folder",
        "output_folder_or_list_of_truncated_output_files",
        "save_probabilities",
        "overwrite",
        "num_processes_preprocessing",
        "num_processes_segmentation_export",
        "folder_with_segs_from_prev_stage",
        "num_parts",
        "part_id",
    ],
    nnUNetPredictor.predict_from_files_sequential: [
        "list_of_lists_or_source_folder",
        "output_folder_or_list_of_truncated_output_files",
        "save_probabilities",
        "overwrite",
        "folder_with_segs_from_prev_stage",
    ],
    nnUNetPredictor.predict_single_npy_array: [
        "input_image",
        "image_properties",
        "segmentation_previous_stage",
        "output_file_truncated",
        "save_or_return_probabilities",
    ],
    nnUNetPredictor.predict_from_list_of_npy_arrays: [
        "image_or_list_of_images",
        "segs_from_prev_stage_or_list_of_segs_from_prev_stage",
        "properties_or_list_of_properties",
        "truncated_ofname",
        "num_processes",
        "save_probabilities",
        "num_processes_segmentation_export",
    ],
    nnUNetPredictor._manage_input_and_output_lists: [  # private hook
        "list_of_lists_or_source_folder",
        "output_folder_or_list_of_truncated_output_files",
        "folder_with_segs_from_prev_stage",
        "overwrite",
        "part_id",
        "num_parts",
        "save_probabilities",
    ],
    DefaultPreprocessor.run_case: ["image_files", "seg_file", "plans_manager", "configuration_manager", "dataset_json"],
    DefaultPreprocessor.run_case_npy: [
        "data",
        "seg",
        "properties",
        "plans_manager",
        "configuration_manager",
        "dataset_json",
    ],
    compute_steps_for_sliding_window: ["image_size", "tile_size", "tile_step_size"],
}


def test_called_signatures_are_unchanged():
    changed = {f.__qualname__: params(f) for f, names in CALLED.items() if params(f) != names}
    assert not changed


def test_overrides_keep_nnunets_parameter_names():
    """nnU-Net's predict_from_files(_sequential) saves its arguments by reading
    ``inspect.signature(self.<method>)`` against its own locals: the override's names must match."""
    for name in ("predict_from_files", "predict_from_files_sequential"):
        assert params(getattr(nnUNetPredictorCTARR, name)) == params(getattr(nnUNetPredictor, name))
    for name in ("predict_single_npy_array", "predict_from_list_of_npy_arrays"):
        base = params(getattr(nnUNetPredictor, name))
        assert params(getattr(nnUNetPredictorCTARR, name))[: len(base)] == base
    for name in ("run_case", "run_case_npy"):
        assert params(getattr(CTARRPreprocessor, name)) == params(getattr(DefaultPreprocessor, name))


def test_properties_and_hooks_used_exist():
    assert isinstance(inspect.getattr_static(ConfigurationManager, "preprocessor_class"), property)
    assert isinstance(inspect.getattr_static(CTARRConfigurationManager, "preprocessor_class"), property)
    assert "self.configuration = " in inspect.getsource(ConfigurationManager.__init__)
    for attr in ("patch_size", "spacing", "previous_stage_name"):
        assert hasattr(ConfigurationManager, attr), attr
    assert isinstance(inspect.getattr_static(LabelManager, "num_segmentation_heads"), property)
    assert callable(LabelManager.convert_probabilities_to_segmentation)
    assert callable(nnUNetPredictor._internal_get_sliding_window_slicers)  # counted by a test
    init = inspect.getsource(nnUNetPredictor.initialize_from_trained_model_folder)
    for attr in ("self.plans_manager", "self.configuration_manager", "self.label_manager", "self.dataset_json"):
        assert attr in init, attr


def test_crop_bookkeeping_keys_are_what_nnunets_export_reads():
    """The preprocessor rewrites these two keys so that nnU-Net's export pastes back into the full image."""
    pre = inspect.getsource(DefaultPreprocessor.run_case_npy)
    export = inspect.getsource(convert_predicted_logits_to_segmentation_with_correct_shape)
    for key in ("bbox_used_for_cropping", "shape_before_cropping"):
        assert key in pre, key
        assert key in export, key


def test_simpleitkio_properties_hold_the_geometry():
    data, props = SimpleITKIO().read_images([str(ABDOMEN[0])])
    assert set(props["sitk_stuff"]) >= {"spacing", "origin", "direction"}
    assert data.ndim == 4
    assert np.allclose(props["spacing"], props["sitk_stuff"]["spacing"][::-1])
