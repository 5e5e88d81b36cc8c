"""``nnUNetv2_ctarr_crop --continue`` over a finished batch never imports torch (start-up)."""

from __future__ import annotations

import subprocess
import sys

import torch
from conftest import SMALL, run_in_process

from nnunet_ctarr.cli.crop import main
from nnunet_ctarr.core.outputs.case_writer import torch_version

CHECK = """
import sys
from nnunet_ctarr.cli.crop import main
code = main(sys.argv[1:])
print("torch imported" if "torch" in sys.modules else "torch not imported", code)
"""


def test_torch_version_is_the_modules_own():
    assert torch_version() == torch.__version__


def test_continue_over_a_finished_batch_does_not_import_torch(tmp_path):
    args = ["-i", str(SMALL[0]), "--anatomy_seg", str(SMALL[1]), "-r", "liver", "-o", str(tmp_path / "o")]
    assert run_in_process(main, args).returncode == 0
    crop = tmp_path / "o" / "example_ct_sm_liver.nii.gz"
    before = crop.stat().st_mtime_ns
    r = subprocess.run([sys.executable, "-c", CHECK, *args, "--continue"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "torch not imported 0"
    assert crop.stat().st_mtime_ns == before
