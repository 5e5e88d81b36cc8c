"""nnUNetv2_ctarr_env: print the line that lets nnU-Net find the CTARR trainers (``nnUNet_extTrainer``).

Add it to your shell profile, or run ``eval "$(nnUNetv2_ctarr_env)"``; the CTARR commands set it
for themselves.
"""
from __future__ import annotations

from ..training.trainer_path import ext_trainer_folder
from .common import parse, run_cli
from .options import Parser


def build_parser() -> Parser:
    return Parser(prog="nnUNetv2_ctarr_env", description=__doc__)


def main(argv: list[str] | None = None) -> int:
    parse(build_parser(), argv)
    print(f'export nnUNet_extTrainer="{ext_trainer_folder()}${{nnUNet_extTrainer:+:$nnUNet_extTrainer}}"')
    return 0


def entry() -> None:
    run_cli(main)


if __name__ == "__main__":
    entry()
