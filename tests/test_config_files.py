"""The YAML config files of the teacher, the distiller and the labeling job: one reader, one set of errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pinrel.distill import DistillConfig
from pinrel.distill import load_config as distill_config
from pinrel.io import read_yaml_mapping
from pinrel.label import load_config as label_config
from pinrel.teacher import TeacherConfig, TeacherError

LOADERS: dict[str, Callable[[Path], Any]] = {
    "reader": read_yaml_mapping,
    "distill": distill_config,
    "teacher": TeacherConfig.from_yaml,
    "label": label_config,
}

BAD: dict[str, tuple[bytes, str]] = {
    "unclosed list": (b"epochs: [1\n", r"not valid YAML: .* at line 2, column 1$"),
    "bad indent": (b"epochs: 1\n lr: 2\n", r"not valid YAML: mapping values are not allowed here at line 2"),
    "not UTF-8": (b"\xff\xfeepochs: 1\n", r"not UTF-8 text \(byte 0"),
    "nested too deeply": (b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n", "YAML nested too deeply"),
    "a list": (b"- epochs: 1\n", "expected a mapping at the top level, got list"),
    "a number": (b"3\n", "expected a mapping at the top level, got int"),
    "a key twice": (b"lr: 1\nepochs: 2\nlr: 3\n", "not valid YAML: duplicate key 'lr' at line 3, column 1$"),
}


@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize("case", list(BAD))
def test_unreadable_configs_are_one_line_errors(tmp_path: Path, loader: str, case: str) -> None:
    content, message = BAD[case]
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        LOADERS[loader](path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and "\n" not in text
    if loader == "teacher":
        assert isinstance(info.value, TeacherError)
    assert path.read_bytes() == content


@pytest.mark.parametrize("loader", list(LOADERS))
def test_a_missing_config_is_named(tmp_path: Path, loader: str) -> None:
    path = tmp_path / "nope.yaml"
    kind = TeacherError if loader == "teacher" else FileNotFoundError
    with pytest.raises(kind, match=f"config file '{path}' does not exist"):
        LOADERS[loader](path)


def test_an_empty_config_is_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing set\n", encoding="utf-8")
    assert read_yaml_mapping(path) == {}
    assert distill_config(path) == DistillConfig()


def test_numbers_in_exponent_form_are_numbers_everywhere(tmp_path: Path) -> None:
    """YAML 1.1 reads `lr: 2e-3` as the string "2e-3": the teacher coerced it and the distiller
    refused it. The one reader now gives a float to both; integers and real strings stay as they were."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "lr: 2e-3\nweight_decay: 1E+0\nepochs: 3\nname: 2e-3x\nquoted: '1e-4'\n", encoding="utf-8"
    )
    assert read_yaml_mapping(path) == {
        "lr": 2e-3,
        "weight_decay": 1.0,
        "epochs": 3,
        "name": "2e-3x",
        "quoted": "1e-4",
    }
    path.write_text("lr: 2e-3\n", encoding="utf-8")
    assert distill_config(path).lr == 2e-3
    path.write_text("teacher:\n  model: m\n  lr: 3e-5\n", encoding="utf-8")
    assert TeacherConfig.from_yaml(path).lr == 3e-5
