"""The 19 CTARR anatomy groups and how label maps of other tools map onto them.

Mappings go *by structure name*, never by label id, so TotalSegmentator v1 and v2 maps,
folders of per-structure masks and nnU-Net models with named labels all work. A group the
source cannot express (TotalSegmentator v1 has no skull and no sternum) is *unobserved*:
registration gives it weight 0 instead of treating it as empty.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from ..base.errors import CTARRError

#: The 19 groups of the CTARR paper (Table 1); label value = index + 1.
GROUPS: tuple[str, ...] = (
    "skull", "vertebrae_C", "ribs_left", "ribs_right", "sternum",
    "vertebrae_T", "vertebrae_L", "sacrum", "hip_left", "hip_right",
    "brain", "lung_left", "lung_right", "heart", "liver",
    "spleen", "kidney_left", "kidney_right", "urinary_bladder",
)


N_GROUPS = len(GROUPS)


#: values of ``-anatomy_format`` (auto = detected from embedded names, label values, vertebra order)
ANATOMY_FORMATS = ("auto", "ts_v2", "ts_v1", "ctarr19", "mask_folder")


_FIXED = {
    "skull": "skull", "sternum": "sternum", "sacrum": "sacrum", "vertebrae_S1": "sacrum",
    "hip_left": "hip_left", "hip_right": "hip_right", "brain": "brain",
    "lung_upper_lobe_left": "lung_left", "lung_lower_lobe_left": "lung_left",
    "lung_upper_lobe_right": "lung_right", "lung_middle_lobe_right": "lung_right",
    "lung_lower_lobe_right": "lung_right",
    "heart": "heart", "heart_myocardium": "heart", "heart_atrium_left": "heart",
    "heart_atrium_right": "heart", "heart_ventricle_left": "heart", "heart_ventricle_right": "heart",
    "liver": "liver", "spleen": "spleen",
    "kidney_left": "kidney_left", "kidney_cyst_left": "kidney_left",
    "kidney_right": "kidney_right", "kidney_cyst_right": "kidney_right",
    "urinary_bladder": "urinary_bladder",
    "scapula_left": "ribs_left", "clavicula_left": "ribs_left",
    "scapula_right": "ribs_right", "clavicula_right": "ribs_right",
}


_PATTERNS = (
    (re.compile(r"^vertebrae_C\d+$"), "vertebrae_C"),
    (re.compile(r"^vertebrae_T\d+$"), "vertebrae_T"),
    (re.compile(r"^vertebrae_L\d+$"), "vertebrae_L"),
    (re.compile(r"^rib_left_\d+$"), "ribs_left"),
    (re.compile(r"^rib_right_\d+$"), "ribs_right"),
)


def group_of(structure: str) -> str | None:
    """CTARR group of a structure name (TotalSegmentator v1/v2 or a group name), or None."""
    s = structure.strip()
    if s in GROUPS:
        return s
    if s in _FIXED:
        return _FIXED[s]
    for pat, grp in _PATTERNS:
        if pat.match(s):
            return grp
    return None


def totalsegmentator_scheme(version: int) -> dict[int, str]:
    """Label id -> structure name of TotalSegmentator's ``total`` task (v1: 104, v2: 117 classes)."""
    text = resources.files("nnunet_ctarr").joinpath("resources/totalsegmentator_class_maps.json").read_text()
    table = json.loads(text)[f"totalsegmentator_v{version}_total"]
    return {int(k): v for k, v in table.items()}


def ctarr19_scheme() -> dict[int, str]:
    return {i + 1: g for i, g in enumerate(GROUPS)}


@dataclass
class LabelScheme:
    """Label id -> group id lookup table built from structure names."""
    name: str
    names: dict[int, str]
    lut: np.ndarray = field(init=False)
    observed: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        top = max(self.names, default=0)
        self.lut = np.zeros(max(top, 255) + 1, dtype=np.uint8)
        self.observed = np.zeros(N_GROUPS, dtype=bool)
        for lab, struct_name in self.names.items():
            g = group_of(struct_name)
            if g is not None and lab > 0:
                gi = GROUPS.index(g)
                self.lut[lab] = gi + 1
                self.observed[gi] = True

    @classmethod
    def named(cls, fmt: str) -> LabelScheme:
        if fmt == "ts_v2":
            return cls("TotalSegmentator v2", totalsegmentator_scheme(2))
        if fmt == "ts_v1":
            return cls("TotalSegmentator v1", totalsegmentator_scheme(1))
        if fmt == "ctarr19":
            return cls("CTARR 19 groups", ctarr19_scheme())
        raise CTARRError(f"unknown anatomy format '{fmt}' (use {', '.join(ANATOMY_FORMATS)})")
