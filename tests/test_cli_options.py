"""One CLI vocabulary: every long option of every command works with one and with two dashes,
nothing is abbreviated, and the shared ideas (regions, fallback, margin, qc) have one spelling."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
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
    modules = {t.split(":")[0].rsplit(".", 1)[-1] for t in scripts.values()}
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
            for spelling in (f"-{bare}",) if len(bare) == 1 else (f"-{bare}", f"--{bare}"):
                assert parser._option_string_actions.get(spelling) is action, f"{name}: {spelling} missing"
            seen += 1
    assert seen > 2


def test_mixed_spellings_parse_to_the_same_values():
    crop = PARSERS["crop.build_parser"]
    one = crop.parse_args(["-i", "a", "-anatomy_seg", "b", "-margin", "5", "-z_only", "-r", "liver"])
    two = crop.parse_args(["-i", "a", "--anatomy_seg", "b", "--margin", "5", "--z_only", "--regions", "liver"])
    assert vars(one) == vars(two)
    assert one.margin == 5.0
    assert one.anatomy_seg == "b"
    assert one.z_only
    predict = PARSERS["predict.build_parser"]
    a = predict.parse_args(["-i", "x", "-o", "y", "--save_probabilities", "-anatomy_seg", "z", "-device", "cpu"])
    b = predict.parse_args(["-i", "x", "-o", "y", "-save_probabilities", "--anatomy_seg", "z", "--device", "cpu"])
    assert vars(a) == vars(b)
    assert a.save_probabilities
    assert a.device == "cpu"


def _required_args(parser: argparse.ArgumentParser) -> list[str]:
    """Values for every required option and positional of a parser (so that only the option under test can fail)."""
    out = []
    for a in parser._actions:
        if not (a.required or (not a.option_strings and a.nargs not in ("*", "?"))) or isinstance(
            a, argparse._HelpAction
        ):
            continue
        value = "1" if a.type in (int, float) else (str(a.choices[0]) if a.choices else "x")
        n = 2 if a.nargs == 2 else 1
        out += ([a.option_strings[0]] if a.option_strings else []) + [value] * n
    return out


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_no_prefix_of_any_option_is_accepted(name):
    """``-anatomy_s x`` and ``--anatomy_s x`` are not taken for ``-anatomy_seg`` (argparse takes
    single-dash prefixes even with allow_abbrev=False): every proper prefix of every option exits 2."""
    parser = PARSERS[name]
    base = _required_args(parser)
    known = set(parser._option_string_actions)
    tried = 0
    for opt in sorted(known):
        dashes = "--" if opt.startswith("--") else "-"
        bare = opt[len(dashes) :]
        for k in range(1, len(bare)):
            prefix = dashes + bare[:k]
            if prefix in known or prefix in ("-", "--"):
                continue
            tried += 1
            err = io.StringIO()
            with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as e:
                parser.parse_args([*base, prefix, "1"])
            assert e.value.code == 2, (name, prefix)
            assert "unrecognized arguments" in err.getvalue() or "expected one argument" in err.getvalue(), (
                name,
                prefix,
                err.getvalue()[-200:],
            )
    assert tried > 0


def test_crop_rejects_an_abbreviated_anatomy_option(tmp_path):
    from nnunet_ctarr.cli import crop

    for spelling in ("-anatomy_s", "--anatomy_s"):
        with pytest.raises(SystemExit) as e, contextlib.redirect_stderr(io.StringIO()):
            crop.main(["-i", str(ABDOMEN[0]), spelling, str(ABDOMEN[1]), "-r", "liver", "-o", str(tmp_path)])
        assert e.value.code == 2


#: commands that can fall back (write something else than the crop when the trust rule says no)
FALLING_BACK = {
    "crop.build_parser": ("whole", "skip", "anyway"),
    "crop_dataset.build_parser": ("whole", "skip", "anyway"),
    "evaluate.build_parser": ("whole", "skip", "anyway"),
    "predict.build_parser": ("whole", "skip", "anyway"),
    "predict_multi.build_parser": ("whole", "skip", "anyway"),
    "prealign.build_prealign_parser": ("skip", "anyway"),
    "prealign.build_body_height_parser": ("skip", "anyway"),
}


@pytest.mark.parametrize("name", sorted(FALLING_BACK))
def test_one_fallback_option_with_one_value_set(name):
    parser = PARSERS[name]
    action = parser._option_string_actions["--on_untrusted"]
    assert tuple(action.choices) == FALLING_BACK[name]
    text = parser.format_help()
    assert "on_miss" not in text and "on_fail" not in text and "train_margin" not in text


def test_old_spellings_still_work_and_say_so():
    crop = PARSERS["crop.build_parser"]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert crop.parse_args(["--on_untrusted", "full"]).on_untrusted == "whole"
        assert crop.parse_args(["--on_untrusted", "crop"]).on_untrusted == "anyway"
        ds = PARSERS["crop_dataset.build_parser"]
        args = ds.parse_args(["-d", "1", "-r", "liver", "-o", "2", "--on_fail", "skip", "--train_margin", "3"])
    assert (args.on_untrusted, args.margin) == ("skip", 3.0)
    assert err.getvalue().count("deprecated") == 4
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):  # no silent change of meaning
        PARSERS["predict.build_parser"].parse_args(["-i", "x", "-o", "y", "--on_miss", "full"])


@pytest.mark.parametrize(
    "name", ["crop.build_parser", "evaluate.build_parser", "predict.build_parser", "crop_dataset.build_parser"]
)
def test_regions_and_margin_have_one_spelling(name):
    parser = PARSERS[name]
    assert parser._option_string_actions["-r"] is parser._option_string_actions["-region"]
    assert parser._option_string_actions["-r"] is parser._option_string_actions["--regions"]
    assert "extra margin in mm on top of the region's own" in parser._option_string_actions["--margin"].help


def test_qc_is_a_flag_everywhere():
    for name, parser in PARSERS.items():
        action = parser._option_string_actions.get("--qc")
        if action is not None:
            assert action.nargs == 0, name


def test_env_prints_help():
    from nnunet_ctarr.cli import env

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as e:
        env.main(["-h"])
    assert e.value.code == 0 and "nnUNet_extTrainer" in out.getvalue()


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
