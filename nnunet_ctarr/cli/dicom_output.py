"""``-output_type nifti|dicom_seg|dicom_rtstruct`` of the predict commands (docs/predict.md).

A command adds the option (:func:`add_output_type_arg`), checks the inputs before any prediction
(:func:`plan_dicom_outputs`: every case must be a DICOM series whose headers can be referenced)
and, after the prediction, writes ``<case>_seg.dcm`` or ``<case>_rtstruct.dcm`` next to each
case's NIfTI prediction (:func:`write_dicom_outputs`), which stays as nnU-Net writes it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..core.base.cases import case_id, dicom_series_files, is_dicom_dir
from ..core.base.errors import CTARRError, quiet_warnings
from ..core.base.geometry import Geometry
from ..core.outputs.dicom import DICOM_KINDS, Algorithm, require_dicom_packages, write_dicom
from ..core.outputs.dicom_series import DicomSeries

OUTPUT_TYPES = ("nifti", *DICOM_KINDS)


def add_output_type_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("-output_type", choices=OUTPUT_TYPES, default="nifti",
                   help="nifti (default): nnU-Net's output only; dicom_seg / dicom_rtstruct: also <case>_seg.dcm "
                        "(DICOM SEG) / <case>_rtstruct.dcm (RTSTRUCT) referencing the input series; DICOM-series "
                        "inputs only; needs pip install 'nnunet-ctarr[dicom]'")


@dataclass
class DicomOutputPlan:
    """What :func:`write_dicom_outputs` writes after the prediction."""
    kind: str                            # dicom_seg or dicom_rtstruct
    cases: dict[str, list[str]]          # case id -> series files in SimpleITK's slice order
    algorithm: Algorithm
    started_ns: int                      # predictions written since then are this run's
    keep_existing: bool                  # --continue_prediction: older predictions count too


def dicom_cases(src: Path, kind: str) -> dict[str, list[str]]:
    """Case id -> series files of every DICOM series the predict commands read from ``src`` (as
    :func:`cli.common.prepare_inputs` does); any other input is one :class:`CTARRError`."""
    need = (f"-output_type {kind} needs DICOM-series inputs (a DICOM folder or a folder of DICOM folders) "
            "to reference")
    if not src.exists():
        raise CTARRError(f"input not found: {src}")
    if src.is_file():
        raise CTARRError(f"{need}; {src} is a file")
    folders = [src] if is_dicom_dir(src) else sorted(d for d in src.iterdir() if is_dicom_dir(d))
    if not folders:
        raise CTARRError(f"{need}; {src} holds no DICOM series")
    return {case_id(d): dicom_series_files(d) for d in folders}


def plan_dicom_outputs(args: argparse.Namespace) -> DicomOutputPlan | None:
    """None for ``-output_type nifti``; else the cases, checked before any prediction: DICOM
    inputs, highdicom installed, every series readable and referencable (one line naming the case)."""
    if args.output_type == "nifti":
        return None
    require_dicom_packages()
    cases = dicom_cases(Path(args.i), args.output_type)
    bad = {}
    for case, files in cases.items():
        try:
            DicomSeries.read(files)
        except CTARRError as e:
            bad[case] = str(e)
    if bad:
        case, msg = next(iter(bad.items()))
        more = f" ({len(bad) - 1} more case(s) too)" if len(bad) > 1 else ""
        raise CTARRError(f"-output_type {args.output_type}: {case}: {msg}{more}")
    model = getattr(args, "m", None) or getattr(args, "spec", None)
    model = Path(model).name if model else " ".join(str(getattr(args, k)) for k in ("d", "c") if getattr(args, k, None))
    return DicomOutputPlan(args.output_type, cases, Algorithm("nnunet-ctarr", __version__, model), time.time_ns(),
                           bool(getattr(args, "continue_prediction", False)))


def output_labels(dataset_json: dict) -> dict[int, str]:
    """Label value -> name of an nnU-Net ``dataset.json`` as its predictions hold them: plain
    labels as given; region-based labels by ``regions_class_order``; ``ignore`` left out."""
    labels = {n: v for n, v in dataset_json.get("labels", {}).items() if n not in ("background", "ignore")}
    if all(isinstance(v, int) for v in labels.values()):
        return {int(v): n for n, v in labels.items()}
    order = dataset_json.get("regions_class_order")
    if not order or len(order) != len(labels):
        raise CTARRError("dataset.json has region-based labels without a matching regions_class_order")
    return {int(v): n for v, n in zip(order, labels)}


def write_dicom_outputs(plan: DicomOutputPlan | None, output_folder: str | Path) -> int:
    """Write the planned DICOM object of every case predicted by this run (or before it, with
    ``--continue_prediction`` where the object is missing) next to its prediction; one line per
    case. Returns 1 if a case could not be written, else 0."""
    if plan is None:
        return 0
    out = Path(output_folder)
    try:                                 # nnU-Net and the multi predictor write it with the predictions
        dj = json.loads((out / "dataset.json").read_text())
    except (OSError, ValueError):
        dj = None
    ending = (dj or {}).get("file_ending", ".nii.gz")
    suffix = DICOM_KINDS[plan.kind]
    todo = {c: f for c, f in plan.cases.items() if _to_write(plan, out / f"{c}{ending}", out / f"{c}{suffix}")}
    if todo and dj is None:
        print(f"error: no {plan.kind}: {out / 'dataset.json'} (the labels) is missing or unreadable", file=sys.stderr)
        return 1
    failed = 0
    for case, files in todo.items():
        try:
            r = _write_case(plan, out / f"{case}{ending}", files, output_labels(dj), out / f"{case}{suffix}")
        except CTARRError as e:
            print(f"error: {case}: no {plan.kind}: {e}", file=sys.stderr)
            failed = 1
            continue
        empty = f"; without voxels: {', '.join(r.empty)}" if r.empty else ""
        print(f"{case}: {plan.kind} -> {r.path} ({len(r.segments)} label(s){empty})", file=sys.stderr)
    return failed


def _to_write(plan: DicomOutputPlan, pred: Path, dst: Path) -> bool:
    """Predicted by this run, or before it with --continue_prediction and no DICOM object yet (a
    case not predicted is reported by the command)."""
    if not pred.is_file():
        return False
    return pred.stat().st_mtime_ns >= plan.started_ns or (plan.keep_existing and not dst.is_file())


def _write_case(plan: DicomOutputPlan, pred: Path, files: list[str], labels: dict[int, str], dst: Path):
    import SimpleITK as sitk
    with quiet_warnings():               # warned about when planned
        series = DicomSeries.read(files)
    try:
        img = sitk.ReadImage(str(pred))
    except RuntimeError:
        raise CTARRError(f"cannot read the prediction {pred}") from None
    series.check_grid(Geometry.of(img), f"the prediction {pred.name}")
    return write_dicom(plan.kind, sitk.GetArrayFromImage(img), series, labels, dst, plan.algorithm)
