"""Keep ``import torchvision`` working when a CUDA torchvision sits next to a CPU-only torch.

Why this exists: PyPI has no CPU build of torchvision, so a CPU-only environment (CPU torch
wheel + ``pip install nnunetv2``) gets a CUDA torchvision whose C extension cannot load. torchvision
then warns about its extension, but its ``_meta_registrations`` module registers fake kernels for
``torchvision::nms``/``qnms`` unconditionally and crashes the import. nnU-Net's trainer lookup
imports every module of its trainer package (one of them imports timm -> torchvision), so
``nnUNetv2_train -tr <any trainer nnU-Net does not find early>`` -- including trainers found
through ``nnUNet_extTrainer`` -- dies with ``operator torchvision::nms does not exist``.

The fix: define the two operator *schemas* (no kernels) before torchvision is imported, so its
import finishes; calling ``torchvision.ops.nms`` still fails with torch's own clear "no kernel"
error, exactly as for any other op of the missing extension. nnU-Net and CTARR never call it.

It runs from torch's plug-in hook (entry point group ``torch.backends``, called at the end of
``import torch``) and acts only when torch has no CUDA *and* the installed torchvision is a CUDA
build (read from its ``version.py`` without importing it). Set ``NNUNET_CTARR_TORCHVISION_COMPAT=0``
to switch it off. It never raises.
"""
from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_LIBRARY = None  # keeps the registration alive (torch removes it when the Library is collected)


def torchvision_build_mismatch() -> bool:
    """True if torch is a CPU-only build and the installed torchvision was built for CUDA/ROCm."""
    import torch

    if torch.version.cuda is not None or getattr(torch.version, "hip", None) is not None:
        return False
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    version_file = Path(list(spec.submodule_search_locations)[0]) / "version.py"
    try:
        text = version_file.read_text()
    except OSError:
        return False
    match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", text)
    return bool(match and re.search(r"\+(cu|rocm)\d", match.group(1)))


def install() -> bool:
    """Define torchvision's nms/qnms schemas if (and only if) its extension cannot provide them.

    Returns True when the schemas were defined by this call.
    """
    global _LIBRARY
    if os.environ.get("NNUNET_CTARR_TORCHVISION_COMPAT", "1") == "0" or _LIBRARY is not None:
        return False
    try:
        if not torchvision_build_mismatch():
            return False
        import torch.library

        lib = torch.library.Library("torchvision", "FRAGMENT")
        for schema in _SCHEMAS:
            lib.define(schema)
        _LIBRARY = lib
        return True
    except Exception:  # a plug-in must never break `import torch`
        return False
