"""The `ray job submit` entrypoints in train/: paths that outlive the job, flags, one-line errors."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from pinrel.jobs import JOB_CONFIG_ENV, check_job_paths, in_uploaded_working_dir

REPO = Path(__file__).resolve().parent.parent
# What Ray's job supervisor sets for an entrypoint submitted with --working-dir.
IN_JOB = json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_0123.zip"}, "metadata": {}})


def _entry(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"train_{name}_jobs", REPO / "train" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("value", "inside"),
    [
        (None, False),
        ("", False),
        ("not json", False),
        ("[1]", False),
        (json.dumps({"runtime_env": {"pip": ["x"]}}), False),
        (json.dumps({"runtime_env": None}), False),
        (IN_JOB, True),
    ],
)
def test_in_uploaded_working_dir(monkeypatch: pytest.MonkeyPatch, value: str | None, inside: bool) -> None:
    if value is None:
        monkeypatch.delenv(JOB_CONFIG_ENV, raising=False)
    else:
        monkeypatch.setenv(JOB_CONFIG_ENV, value)
    assert in_uploaded_working_dir() is inside


def test_relative_paths_are_refused_only_inside_a_job(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    paths = {"pairs": "runs/pairs.parquet", "teacher": [str(tmp_path / "a"), Path("b")], "out": None}
    monkeypatch.delenv(JOB_CONFIG_ENV, raising=False)
    check_job_paths(paths)  # outside a job, relative to the current directory as usual
    monkeypatch.setenv(JOB_CONFIG_ENV, IN_JOB)
    with pytest.raises(
        ValueError,
        match=r"relative path\(s\) in a Ray job with a working dir: pairs=runs/pairs\.parquet, teacher=b\.",
    ):
        check_job_paths(paths)
    check_job_paths({"pairs": str(tmp_path / "p.parquet"), "out": "s3://bucket/labels", "dev": None})


@pytest.mark.parametrize(
    ("name", "argv", "prefix"),
    [
        ("teacher", ["--train", "data/train.parquet", "--out", "/tmp/never-written"], "pinrel teacher"),
        ("distill", ["--labels", "/tmp/labels", "--out", "runs/student"], "pinrel distill"),
        (
            "label",
            ["--pairs", "/tmp/pairs.parquet", "--teacher", "runs/teacher", "--out", "/tmp/labels"],
            "pinrel label",
        ),
    ],
)
def test_entrypoints_refuse_relative_paths_in_a_job(
    tmp_path: Path, name: str, argv: list[str], prefix: str
) -> None:
    # A subprocess, as Ray runs it: the refusal is one line on stderr and exit status 2, before any work.
    env = {**_clean_env(), JOB_CONFIG_ENV: IN_JOB}
    config = str(REPO / "train" / f"{name}.yaml")
    out = subprocess.run(
        [sys.executable, str(REPO / "train" / f"{name}.py"), "--config", config, *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr
    line = out.stderr.strip()
    assert line.startswith(f"{prefix}: error: relative path(s) in a Ray job") and "\n" not in line
    assert "Traceback" not in out.stderr
    assert list(tmp_path.iterdir()) == []


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != JOB_CONFIG_ENV}


def test_entrypoints_are_their_cli_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """train/teacher.py and train/distill.py take every flag of `pinrel teacher train` / `pinrel distill`
    (here --max-failures), with their YAML as the default config, and report errors in one line."""
    with pytest.raises(SystemExit):
        _entry("teacher").main(["--max-failures", "x"])
    capsys.readouterr()
    bad = tmp_path / "teacher.yaml"
    bad.write_text(
        "data:\n  train: /x.csv\n  out: /o\n  dve: /d.csv\nteacher:\n  model: m\n", encoding="utf-8"
    )
    assert _entry("teacher").main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "unknown key(s) 'dve' in 'data'; known keys: train, dev, out, mapping" in err
    assert _entry("teacher").main(["--train", str(tmp_path / "t.csv"), "--max-failures", "-1"]) == 2
    assert "max_failures" in capsys.readouterr().err  # the default config was read, then the flag applied
    out = tmp_path / "student"
    args = ["--labels", str(tmp_path / "l"), "--out", str(out)]
    assert _entry("distill").main([*args, "--max-failures", "-1"]) == 2
    assert "max_failures" in capsys.readouterr().err
    assert _entry("distill").main(args) == 2
    assert f"labels dir '{tmp_path / 'l'}' does not exist" in capsys.readouterr().err
    assert not out.exists()


def test_the_shipped_yaml_files_chain_and_run_on_cpus() -> None:
    """teacher.yaml's output is label.yaml's teacher, label.yaml's output distill.yaml's labels; the
    defaults need no GPU, so that a job on a CPU cluster is not left waiting for one."""
    import yaml

    teacher = yaml.safe_load((REPO / "train" / "teacher.yaml").read_text(encoding="utf-8"))
    label = yaml.safe_load((REPO / "train" / "label.yaml").read_text(encoding="utf-8"))
    distill = yaml.safe_load((REPO / "train" / "distill.yaml").read_text(encoding="utf-8"))
    assert label["teacher"] == teacher["data"]["out"] and distill["labels"] == label["out"]
    assert label["gpus_per_actor"] == 0 and not distill["gpu"] and not teacher["teacher"]["use_gpu"]


@pytest.mark.parametrize(
    "argv",
    [
        ["teacher", "train", "--model", "m", "--train", "/tmp/t.csv", "--out", "runs/teacher"],
        ["label", "--pairs", "/tmp/p.parquet", "--teacher", "/tmp/t", "--out", "runs/labels"],
        ["distill", "--labels", "runs/labels", "--out", "/tmp/student"],
    ],
)
def test_pinrel_commands_refuse_relative_paths_in_a_job(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    from pinrel.cli import main

    monkeypatch.setenv(JOB_CONFIG_ENV, IN_JOB)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"pinrel {argv[0]}: error: relative path(s) in a Ray job with a working dir: " in err


def test_ray_session_shuts_down_only_what_it_started() -> None:
    """A private local Ray for the body when there is none; the caller's Ray as it is otherwise.
    (Joining a cluster that `ray start` left, which `ray.init(num_cpus=...)` refused with
    "When connecting to an existing cluster, num_cpus ... must not be provided", is `address="auto"`.)"""
    import ray

    from pinrel.raycluster import ray_session

    assert not ray.is_initialized()
    with ray_session(num_cpus=1):
        assert ray.cluster_resources()["CPU"] == 1
    assert not ray.is_initialized()
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        with ray_session(num_cpus=1):
            assert ray.cluster_resources()["CPU"] == 2
        assert ray.is_initialized()
    finally:
        ray.shutdown()
