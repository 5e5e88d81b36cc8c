"""Build a small demo batch from the bundled scans, run ``nnUNetv2_ctarr_crop --qc`` on it and
screenshot the batch report ``ctarr_report.html`` in headless Chromium (docs/img/ctarr_report.png).

The batch: the abdomen, chest and small abdomen CTs (clean), a head-neck-like CT built from the
chest CT (``evaluation.hard_cases.head_neck``: untrusted) and a corrupt file (failed), regions
liver and kidneys.

    python scripts/screenshot_report.py                      # work in /tmp/ctarr_report_demo
    python scripts/screenshot_report.py --hash status=untrusted --png docs/img/ctarr_report_untrusted.png
"""

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import SimpleITK as sitk

from nnunet_ctarr.cli.crop import main as crop_main
from nnunet_ctarr.core.base.images import read_image
from nnunet_ctarr.evaluation.hard_cases import head_neck

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "examples" / "data"
CLEAN = {
    "abd": "totalseg_example/example_ct",
    "chest": "chest_lidc/chest_ct_3mm",
    "sm": "totalseg_example/example_ct_sm",
}


def build_batch(work: Path) -> tuple[Path, Path]:
    """imgs/ and anat/ (matched by case id) of the demo batch under ``work``."""
    imgs, anat = work / "imgs", work / "anat"
    shutil.rmtree(work, ignore_errors=True)
    imgs.mkdir(parents=True), anat.mkdir()
    for case, stem in CLEAN.items():
        shutil.copy(DATA / f"{stem}.nii.gz", imgs / f"{case}.nii.gz")
        shutil.copy(DATA / f"{stem}_totalseg_v2.nii.gz", anat / f"{case}.nii.gz")
    chest = DATA / CLEAN["chest"]
    img, lab = head_neck(read_image(f"{chest}.nii.gz"), read_image(f"{chest}_totalseg_v2.nii.gz"), neck_mm=90.0)
    sitk.WriteImage(img, str(imgs / "head_neck.nii.gz"))
    sitk.WriteImage(lab, str(anat / "head_neck.nii.gz"))
    (imgs / "corrupt.nii.gz").write_bytes(b"not an image" * 100)
    shutil.copy(DATA / f"{CLEAN['abd']}_totalseg_v2.nii.gz", anat / "corrupt.nii.gz")
    return imgs, anat


def screenshot(chromium: str, page: Path, png: Path, size: str, hash_: str) -> None:
    """``page`` (with ``#hash_``) as a PNG, reduced to 256 colours to keep it small."""
    from PIL import Image

    url = page.resolve().as_uri() + (f"#{hash_}" if hash_ else "")
    raw = png.with_suffix(".raw.png")
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={raw}",
            f"--window-size={size}",
            url,
        ],
        check=True,
        capture_output=True,
    )
    Image.open(raw).convert("RGB").quantize(256).save(png, optimize=True)
    raw.unlink()
    print(f"{png}: {png.stat().st_size // 1024} KB")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/ctarr_report_demo", help="folder for the batch and its crops")
    ap.add_argument("--png", default=str(REPO / "docs" / "img" / "ctarr_report.png"), help="screenshot file")
    ap.add_argument("--hash", default="", help="URL fragment, e.g. status=untrusted (the page's filter)")
    ap.add_argument("--size", default="1400,1300", help="browser window width,height")
    ap.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser") or "chromium")
    ap.add_argument("--reuse", action="store_true", help="screenshot the report already in --work")
    args = ap.parse_args()
    work = Path(args.work)
    out = work / "crops"
    if not args.reuse:
        imgs, anat = build_batch(work)
        code = crop_main(["-i", str(imgs), "-anatomy_seg", str(anat), "-r", "liver", "kidneys", "-o", str(out), "--qc"])
        print(f"crop exit code {code} (1 expected: one case failed, one untrusted)")
    screenshot(args.chromium, out / "ctarr_report.html", Path(args.png), args.size, args.hash)
    return 0


if __name__ == "__main__":
    sys.exit(main())
