"""nnUNetv2_ctarr_report: merge the part reports of nnUNetv2_ctarr_crop -num_parts N -part_id k
(ctarr_report.part<k>of<N>.json in its output folder) into one ctarr_report.json, .csv and .html.

Names every part or case that is missing, a case in two parts and an interrupted part (exit code
1). A part without its report (killed before the end) is rebuilt from the sidecars <case>.ctarr.json
of the cases it finished; give the crop's input folder (-inputs) to check that every case is there.
"""
from __future__ import annotations

from pathlib import Path

from ..core.base.cases import list_cases
from ..core.base.files import check_output_folder
from ..core.outputs.report_merge import merge_parts
from .common import parse, run_cli
from .options import Parser

EPILOG = """examples:
  nnUNetv2_ctarr_report -i crops/                       # after the SLURM array of nnUNetv2_ctarr_crop ... -o crops
  nnUNetv2_ctarr_report -i crops/ -inputs /data/imgs    # also name cases in no report (the crop's -i)
  nnUNetv2_ctarr_report -i crops/ -num_parts 8 -o merged/

exit codes: 0 every part and case there and every row clean (as nnUNetv2_ctarr_crop's 0); 1 something
missing, duplicated or interrupted, or a row not clean; 2 usage error
"""


def build_parser() -> Parser:
    p = Parser(prog="nnUNetv2_ctarr_report", description=__doc__, epilog=EPILOG)
    p.add_argument("-i", dest="input", required=True, help="the crop command's output folder (with the part reports)")
    p.add_argument("-o", dest="output", help="where to write ctarr_report.json/.csv/.html (default: the -i folder)")
    p.add_argument("-inputs", help="the crop command's input folder (its -i): every case must be in the report")
    p.add_argument("-num_parts", type=int, help="the split to merge (default: the one N of the part reports found)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    folder = Path(args.input)
    cases = [c.case for c in list_cases(args.inputs)] if args.inputs else None
    merge = merge_parts(folder, args.num_parts, cases)
    out = check_output_folder(args.output or folder)
    qc = any(folder.glob("*_qc.png"))
    merge.report.write(out, qc=qc, pictures=folder)
    for line in merge.notes + merge.problems:
        print(line)
    one_region = len({r.region for r in merge.report.rows}) == 1
    print("\n".join(merge.report.summary_lines(out, one_region)))
    print(f"merged {merge.parts_read} of {merge.num_parts} part report(s) -> {out / 'ctarr_report.json'} (.csv, .html)")
    return 0 if merge.report.all_clean else 1


def entry() -> None:
    run_cli(main)


if __name__ == "__main__":
    entry()
