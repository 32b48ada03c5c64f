"""Configs: YAML values, flag overrides, errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from biasjudge.config import ConfigModel, load_config, resolve_data_dir
from biasjudge.errors import ConfigError


class Example(ConfigModel):
    lr: float = 2e-4
    """Learning rate."""
    epochs: int = 3
    """Passes over the data."""


def test_file_values_then_flag_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.001\nepochs: 5\n")
    assert load_config(Example, path) == Example(lr=0.001, epochs=5)
    assert load_config(Example, path, {"epochs": 1, "lr": None}) == Example(lr=0.001, epochs=1)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("epochs: many\n", "key 'epochs'"), ("lr_typo: 1\n", "key 'lr_typo'"), ("- 1\n", "mapping"), ("a: [\n", "YAML")],
)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment) as info:
        load_config(Example, path)
    assert str(path) in str(info.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(Example, tmp_path / "nope.yaml")


def test_data_dir_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIASJUDGE_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("BIASJUDGE_DATA_DIR")
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "project" / "sub").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "project" / "sub")
    assert resolve_data_dir() == tmp_path / "shared" / "data"


def test_a_shipped_config_is_found_by_name_and_a_real_file_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from biasjudge.config import packaged_config

    monkeypatch.chdir(tmp_path)  # no configs/ folder here: the names must come from the package
    shipped = packaged_config("sft-cpu")
    assert shipped is not None and shipped.name == "sft-cpu.yaml" and shipped.is_file()
    assert packaged_config("configs/sft-cpu.yaml") == shipped == packaged_config("sft-cpu.yaml")
    assert packaged_config("no-such-config") is None
    own = tmp_path / "sft-cpu.yaml"
    own.write_text("model: mine\n")
    assert packaged_config("sft-cpu.yaml") is None  # the user's file is used, not the shipped one
