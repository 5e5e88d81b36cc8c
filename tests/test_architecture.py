"""The package layout is a contract: the core imports no nnU-Net and no other subpackage, modules
and functions stay small (docs/architecture.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

PKG = REPO / "nnunet_ctarr"
SUBPACKAGES = ("core", "inference", "training", "evaluation", "cli")
#: who may import whom (besides itself); cli is the only layer that sees everything
ALLOWED = {
    "core": set(),
    "inference": {"core"},
    "training": {"core"},
    "evaluation": {"core"},
    "cli": {"core", "inference", "training", "evaluation"},
}


#: the core's stages and which of them each may import (besides itself): the data flows downwards
CORE_STAGES = ("base", "anatomy", "regions", "localise", "outputs", "build")
CORE_ALLOWED = {
    "base": set(),
    "anatomy": {"base"},
    "regions": {"base"},
    "localise": {"base", "anatomy", "regions"},
    "pipeline": {"base", "anatomy", "regions", "localise"},  # core/pipeline.py: one case in memory
    "outputs": {"base", "anatomy", "regions", "localise", "pipeline"},
    "build": {"base", "anatomy", "regions", "localise"},
}


def _modules(sub: str) -> list[Path]:
    return sorted((PKG / sub).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Absolute nnunet_ctarr modules (or packages) a module imports anywhere in its body, except
    under ``if TYPE_CHECKING:`` (type hints only)."""
    tree = ast.parse(path.read_text())
    here = path.relative_to(REPO).with_suffix("").parts
    pkg = here[:-1] if here[-1] != "__init__" else here[:-1]
    skip = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING"
        for n in ast.walk(node)
    }
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            base = (list(pkg[: len(pkg) - node.level + 1]) if node.level else []) + (node.module or "").split(".")
            base = [b for b in base if b]
            for a in node.names:
                full = ".".join(base + [a.name])
                out.add(full if (REPO / (full.replace(".", "/") + ".py")).exists() else ".".join(base))
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {m for m in out if m.startswith("nnunet_ctarr")}


def _imported_subpackages(path: Path) -> set[str]:
    """Subpackages of nnunet_ctarr a module imports (relative or absolute, also inside functions)."""
    tree = ast.parse(path.read_text())
    here = path.relative_to(REPO).with_suffix("").parts  # ('nnunet_ctarr', 'core', 'io')
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(here[: len(here) - node.level]) + (node.module.split(".") if node.module else [])
            else:
                base = (node.module or "").split(".")
            names = [base + [a.name] for a in node.names] if len(base) == 1 else [base]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".") for a in node.names]
        else:
            continue
        for parts in names:
            if parts[0] == "nnunet_ctarr" and len(parts) > 1 and parts[1] in SUBPACKAGES:
                out.add(parts[1])
    return out


@pytest.mark.parametrize("sub", SUBPACKAGES)
def test_subpackages_import_only_what_the_layering_allows(sub):
    bad = {str(p.relative_to(REPO)): sorted(_imported_subpackages(p) - ALLOWED[sub] - {sub}) for p in _modules(sub)}
    assert not {k: v for k, v in bad.items() if v}


@pytest.mark.parametrize("stage", [*CORE_STAGES, "pipeline"])
def test_core_stages_import_only_the_stages_below(stage):
    bad = {}
    files = [PKG / "core" / "pipeline.py"] if stage == "pipeline" else _modules(f"core/{stage}")
    for p in files:
        used = {m.split(".")[2] for m in _imports(p) if m.startswith("nnunet_ctarr.core.") and m.count(".") >= 2}
        if used - CORE_ALLOWED[stage] - {stage}:
            bad[str(p.relative_to(REPO))] = sorted(used - CORE_ALLOWED[stage] - {stage})
    assert not bad


def test_core_is_split_into_stages():
    """The core holds its stages and at most 8 modules of its own."""
    assert sorted(p.name for p in (PKG / "core").iterdir() if p.is_dir() and p.name != "__pycache__") == sorted(
        CORE_STAGES
    )
    assert len(list((PKG / "core").glob("*.py"))) <= 8


def test_no_import_circle_in_the_package():
    graph = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        graph[name] = {m for m in _imports(p) if m != name}
    seen, stack, circles = set(), [], []

    def visit(n):
        if n in stack:
            circles.append(stack[stack.index(n) :] + [n])
            return
        if n in seen:
            return
        seen.add(n)
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if not n.startswith(m + "."):  # a module importing its own package's face is no circle
                visit(m)
        stack.pop()

    for n in sorted(graph):
        visit(n)
    assert not circles


def test_importing_the_core_leaves_nnunet_out():
    mods = sorted(
        ".".join(p.relative_to(PKG / "core").with_suffix("").parts) for p in _modules("core") if p.stem != "__init__"
    )
    code = (
        "import sys\n"
        + "".join(f"import nnunet_ctarr.core.{m}\n" for m in mods)
        + "print(sorted(m for m in sys.modules if m.split('.')[0] in ('nnunetv2', 'dynamic_network_architectures')))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"
    assert len(mods) >= 15  # the core's modules were all imported


def _argument_table(node: ast.FunctionDef) -> bool:
    """A function that only declares command-line options: its statements are calls of
    ``add_argument`` / ``add_*`` (and the parser's creation and return)."""
    for stmt in node.body:
        if isinstance(stmt, (ast.Expr, ast.Return)) and isinstance(stmt.value, (ast.Constant, ast.Name)):
            continue  # the docstring, ``return p``
        call = stmt.value if isinstance(stmt, (ast.Expr, ast.Assign, ast.Return)) else None
        if not isinstance(call, ast.Call):
            return False
        name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
        if not (name.startswith("add_") or name == "Parser"):
            return False
    return True


def _long_functions(path: Path, limit: int) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not _argument_table(node):
            n = node.end_lineno - node.lineno + 1
            if n > limit:
                out.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_modules_and_functions_are_small():
    files = sorted(PKG.rglob("*.py"))
    long_modules = [f"{p.relative_to(REPO)} ({n} lines)" for p in files if (n := len(p.read_text().splitlines())) > 300]
    assert not long_modules
    assert not [f for p in files for f in _long_functions(p, 60)]


def test_the_api_sees_the_core_and_only_the_cli_sees_the_api():
    assert _imported_subpackages(PKG / "api.py") <= {"core", "inference"}
    users = [p for p in PKG.rglob("*.py") if "nnunet_ctarr.api" in _imports(p) and p != PKG / "api.py"]
    assert all(p.parent.name == "cli" for p in users), users


def test_the_size_rule_exempts_only_argument_tables():
    table = ast.parse("def build_parser():\n    p = Parser()\n    p.add_argument('-x')\n    return p\n").body[0]
    work = ast.parse("def build_atlas():\n    p = Parser()\n    x = compute(p)\n    return x\n").body[0]
    assert _argument_table(table) and not _argument_table(work)


def test_help_and_list_regions_import_neither_torch_nor_nnunet():
    """Fast start: every command's -h (and crop's --list_regions) answers without importing torch
    or nnU-Net; they are imported when work starts."""
    cli = sorted(p.stem for p in _modules("cli") if p.stem not in ("__init__", "common", "options"))
    code = (
        "import sys, contextlib, io, importlib\n"
        f"for m in {cli!r}:\n"
        "    mod = importlib.import_module('nnunet_ctarr.cli.' + m)\n"
        "    mains = [getattr(mod, n) for n in dir(mod) if n.endswith('main') and callable(getattr(mod, n))]\n"
        "    for main in mains:\n"
        "        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "            main(['-h'])\n"
        "from nnunet_ctarr.cli import crop\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    crop.main(['--list_regions'])\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'nnunetv2', 'dynamic_network_architectures'}))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "[]"
    assert len(cli) >= 9
