"""The wheel users get: `maturin build --release`, installed with pip into a fresh venv, scoring there.

The fresh venv sees the dev venv's third-party packages through a `.pth` line (torch and Ray are
gigabytes; copying them would test pip's download speed, not pinrel), so `pip install --no-index`
still resolves every declared dependency, offline. pinrel itself comes only from the wheel: the
dev venv's editable `pinrel.pth` is not processed on a path added by a `.pth` line, and the test
checks where `pinrel` was imported from.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest

import pinrel
from pinrel.student import Scorer, save_student

from .test_student import N_FEATURES, _model

REPO = Path(__file__).resolve().parents[1]
CLIENT = REPO / "tests" / "wheel_client" / "client_example.py"

pytestmark = pytest.mark.slow


def _run(cmd: list[str | Path], **kw: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=900, **kw)  # type: ignore[call-overload]
    assert proc.returncode == 0, f"{cmd}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    maturin = shutil.which("maturin", path=str(Path(sys.executable).parent))
    if maturin is None:
        pytest.fail("maturin is not installed in this venv (it is part of the dev extra)")
    out = tmp_path_factory.mktemp("wheels")
    _run([maturin, "build", "--release", "--out", out, "--interpreter", sys.executable], cwd=REPO)
    wheels = sorted(out.glob("pinrel-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    # Without pip (hence without the old setuptools that ensurepip bundles, which would shadow the one
    # torch needs); the dev venv's pip installs into it with --python.
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    py = venv / "bin" / "python"
    purelib = _run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    deps = sysconfig.get_paths()["purelib"]
    Path(purelib, "_dev_deps.pth").write_text(deps + "\n")
    pip = [sys.executable, "-m", "pip", "--python", py, "--disable-pip-version-check"]
    _run([*pip, "install", "--no-index", wheel])
    return venv


def test_wheel_is_abi3_linux_and_ships_stubs(wheel: Path) -> None:
    # cp310-abi3: one wheel for every CPython >= 3.10; maturin tags it manylinux after its audit.
    name = wheel.name
    assert "-cp310-abi3-" in name and "linux" in name and name.endswith("_x86_64.whl"), name
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("pinrel/py.typed", "pinrel/_native.pyi", "pinrel/__init__.py", "pinrel/student.py"):
        assert f in names, f"{f} missing from {wheel.name}"
    assert any(n.startswith("pinrel/_native") and n.endswith(".so") for n in names), sorted(names)
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert "Requires-Python: >=3.10" in text
    assert "Provides-Extra: vllm" in text


def test_installed_wheel_scores_with_a_saved_student(fresh_venv: Path, tmp_path: Path) -> None:
    student = tmp_path / "student"
    save_student(
        student, _model(), pinrel.FeatureHasher(n_features=N_FEATURES), pinrel.AssemblySpec(), metrics={}
    )
    proc = _run([fresh_venv / "bin" / "python", CLIENT, student], cwd=tmp_path)
    got = json.loads(proc.stdout)
    assert Path(got["module"]).is_relative_to(fresh_venv), f"pinrel came from {got['module']}, not the wheel"
    assert got["version"] == pinrel.__version__
    assert got["ray_imported"] is False
    # The same artifact scored here, by the develop install, gives the same numbers.
    items = [
        {"title": "Red ceramic mug", "description": "Holds 350 ml", "boards": ["Kitchen"]},
        {"title": "Blue glass vase", "captions": ["a vase on a shelf"]},
        {"title": "東京タワーの夜景", "lang": "ja"},
    ]
    here = Scorer.load(student).score("red mug", items)
    np.testing.assert_allclose(np.array(got["probs"]), here.probs, atol=1e-6)
    assert got["texts"] == pinrel.assemble(items)
    assert got["batch_sizes"] == [3, 2]
    assert [i for i, _ in got["ranking"]] == sorted(range(3), key=lambda i: (-here.scores[i], i))


def _mypy_strict(venv: Path, file: Path) -> subprocess.CompletedProcess[str]:
    mypy = shutil.which("mypy", path=str(Path(sys.executable).parent))
    if mypy is None:
        pytest.fail("mypy is not installed in this venv (it is part of the dev extra)")
    # --python-executable makes mypy find pinrel where pip put it, with the stubs the wheel ships.
    py = str(venv / "bin" / "python")
    cmd = [mypy, "--strict", "--no-incremental", "--python-executable", py, str(file)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=file.parent)


def test_mypy_strict_passes_on_a_client_of_the_installed_wheel(fresh_venv: Path) -> None:
    proc = _mypy_strict(fresh_venv, CLIENT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict_catches_a_misuse(fresh_venv: Path, tmp_path: Path) -> None:
    # The check above means something only if mypy sees pinrel's real types (not Any).
    bad = tmp_path / "bad.py"
    bad.write_text("import pinrel\n\ns = pinrel.Scorer.load(3)\nn: int = pinrel.assemble([])\n")
    proc = _mypy_strict(fresh_venv, bad)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Scorer.load" in proc.stdout or '"load"' in proc.stdout, proc.stdout
    assert "assemble" in proc.stdout or "list[str]" in proc.stdout, proc.stdout
