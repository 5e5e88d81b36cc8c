"""One CLI convention: every option of every command works with one and with two dashes."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
import tomllib
from conftest import ABDOMEN, REPO

import nnunet_ctarr.cli as cli_pkg


def _parsers() -> dict[str, object]:
    """Every parser builder of the CLI package (``build_parser``, ``build_*_parser``)."""
    out = {}
    for info in pkgutil.iter_modules(cli_pkg.__path__):
        mod = importlib.import_module(f"nnunet_ctarr.cli.{info.name}")
        for name in dir(mod):
            if name.startswith("build") and name.endswith("parser") and getattr(mod, name).__module__ == mod.__name__:
                out[f"{info.name}.{name}"] = getattr(mod, name)()
    return out


PARSERS = _parsers()


def test_every_command_has_a_parser():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    modules = {t.split(":")[0].rsplit(".", 1)[-1] for n, t in scripts.items() if n != "nnUNetv2_ctarr_env"}
    have = {k.split(".")[0] for k in PARSERS}
    assert modules <= have, modules - have
    assert len(PARSERS) >= 11


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_option_has_both_spellings(name):
    parser = PARSERS[name]
    seen = 0
    for action in parser._actions:
        for opt in action.option_strings:
            bare = opt.lstrip("-")
            for spelling in (f"-{bare}", f"--{bare}"):
                assert parser._option_string_actions.get(spelling) is action, f"{name}: {spelling} missing"
            seen += 1
    assert seen > 2


def test_mixed_spellings_parse_to_the_same_values():
    crop = PARSERS["crop.build_parser"]
    one = crop.parse_args(["-i", "a", "-anatomy_seg", "b", "-margin", "5", "-z_only", "-r", "liver"])
    two = crop.parse_args(["--i", "a", "--anatomy_seg", "b", "--margin", "5", "--z_only", "--r", "liver"])
    assert vars(one) == vars(two)
    assert one.margin == 5.0
    assert one.anatomy_seg == "b"
    assert one.z_only
    predict = PARSERS["predict.build_parser"]
    a = predict.parse_args(["-i", "x", "-o", "y", "--save_probabilities", "-anatomy_seg", "z", "-device", "cpu"])
    b = predict.parse_args(["--i", "x", "--o", "y", "-save_probabilities", "--anatomy_seg", "z", "--device", "cpu"])
    assert vars(a) == vars(b)
    assert a.save_probabilities
    assert a.device == "cpu"


def test_no_abbreviations():
    """``--anat`` is not silently taken for ``--anatomy_seg`` (argparse's default)."""
    with pytest.raises(SystemExit):
        PARSERS["crop.build_parser"].parse_args(["-i", str(ABDOMEN[0]), "--anat", "x"])


#: every command that locates a region (registers a scan's anatomy to the atlas)
LOCATING = [
    "crop.build_parser",
    "crop_dataset.build_parser",
    "evaluate.build_parser",
    "learn_region.build_parser",
    "prealign.build_body_height_parser",
    "prealign.build_prealign_parser",
    "predict.build_parser",
    "predict_multi.build_parser",
]


@pytest.mark.parametrize("name", LOCATING)
def test_every_locating_command_takes_both_anatomy_sources(name):
    parser = PARSERS[name]
    for opt in (
        "-anatomy_seg",
        "--anatomy_seg",
        "-anatomy_model",
        "--anatomy_model",
        "-anatomy_folds",
        "--anatomy_chk",
        "-device",
    ):
        assert opt in parser._option_string_actions, f"{name}: {opt} missing"
    assert parser._option_string_actions["-anatomy_model"] is parser._option_string_actions["--anatomy_model"]
    help_text = parser._option_string_actions["-anatomy_model"].help
    assert all(k in help_text for k in ("totalsegmentator", "totalsegmentator:6mm", "hu"))


def test_no_command_has_anatomy_maps_without_the_model_source():
    """A command that takes -anatomy_seg takes -anatomy_model too (one set of anatomy options)."""
    with_seg = {n for n, p in PARSERS.items() if "-anatomy_seg" in p._option_string_actions}
    assert with_seg == set(LOCATING)
    assert all("-anatomy_model" in PARSERS[n]._option_string_actions for n in with_seg)


def test_anatomy_disable_tta_reaches_the_anatomy_model(random_models):
    """``--anatomy_disable_tta`` (either spelling) switches off the anatomy model's mirroring on the
    commands without nnU-Net inference flags; without it the model mirrors as nnU-Net does."""
    from nnunet_ctarr.cli import crop
    from nnunet_ctarr.cli.options import anatomy_source

    base = ["-i", "x", "-o", "y", "-r", "liver", "-anatomy_model", str(random_models["anatomy19"])]
    for flag in ("-anatomy_disable_tta", "--anatomy_disable_tta"):
        assert anatomy_source(crop.build_parser().parse_args([*base, flag])).disable_tta is True
    assert anatomy_source(crop.build_parser().parse_args(base)).disable_tta is False
