"""The package surface: public names, version, stubs that match the compiled module."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import pinrel
from pinrel import _native

STUB = Path(pinrel.__file__).with_name("_native.pyi")


def test_public_names_are_exported() -> None:
    for name in pinrel.__all__:
        assert hasattr(pinrel, name), name
    assert pinrel.__version__ == _native.__version__


def _stub_names() -> set[str]:
    tree = ast.parse(STUB.read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def test_stubs_match_the_compiled_module() -> None:
    runtime = {n for n in dir(_native) if not n.startswith("_")} | {"__version__"}
    stubbed = _stub_names()
    assert runtime - stubbed == set(), f"missing from _native.pyi: {sorted(runtime - stubbed)}"
    assert stubbed - runtime == set(), f"stubbed but not compiled: {sorted(stubbed - runtime)}"


def test_stub_methods_match_classes() -> None:
    tree = ast.parse(STUB.read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            cls = getattr(_native, node.name)
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and not item.name.startswith("__"):
                    assert hasattr(cls, item.name), f"{node.name}.{item.name} is stubbed but missing"
            public = {n for n in dir(cls) if not n.startswith("_")}
            stubbed = {i.name for i in node.body if isinstance(i, ast.FunctionDef)}
            assert public <= stubbed, f"{node.name}: not stubbed {sorted(public - stubbed)}"


def test_typed_marker_ships() -> None:
    assert Path(pinrel.__file__).with_name("py.typed").is_file()


def test_import_pinrel_does_not_import_ray_or_torch() -> None:
    code = (
        "import sys, pinrel; pinrel.assemble([{'title': 'x'}]); "
        "print('ray' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "False"]


def test_the_readme_python_api_block_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's Python API example, as written, against a student saved where it looks (student/);
    only the Client call, which needs a running server, is left out. Its comments' outputs hold."""
    import re

    import torch

    from pinrel.student import StudentConfig, StudentModel, save_student

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Python API\n\n```python\n(.*?)```", readme, re.S)
    assert block is not None
    lines = block.group(1).splitlines()
    assert any("pinrel.Client(" in line for line in lines)
    code = "\n".join(line for line in lines if "pinrel.Client(" not in line)
    torch.manual_seed(0)
    model = StudentModel(StudentConfig(grades=5, n_features=2**12, embed_dim=8, hidden=(16,)))
    save_student(tmp_path / "student", model, pinrel.FeatureHasher(n_features=2**12), pinrel.AssemblySpec())
    monkeypatch.chdir(tmp_path)
    scope: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), scope)
    shown = re.search(r"pinrel\.assemble\(items\)\n# (\[.*\])\n", block.group(1))
    assert shown is not None and pinrel.assemble(scope["items"]) == ast.literal_eval(shown.group(1))
    assert pinrel.assemble_pairs(["red mug"], scope["items"])[0].startswith("query: red mug [SEP] title: Red")
    assert sorted(int(i) for b in scope["batches"] for i in b) == list(range(len(scope["lengths"])))
    assert scope["X"].shape == (2, 2**20) and scope["M"].shape == (1, 10)
    assert len(scope["res"].scores) == 1
