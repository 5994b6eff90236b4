from dataclasses import dataclass, field
from typing import Literal

import pytest

from graphwsss.config import ConfigError, load_config, parse_overrides, to_yaml


@dataclass
class Inner:
    enabled: bool = True
    rate: float = 0.5
    name: Literal["a", "b"] = "a"


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    limit: int | None = None
    sizes: tuple[int, ...] = (1, 2)


def test_defaults_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("inner:\n  rate: 2\nlimit: 3\n")
    config = load_config(Outer, path, ["inner.enabled=false", "sizes=[4, 5]"])
    assert config == Outer(Inner(enabled=False, rate=2.0), limit=3, sizes=(4, 5))
    assert isinstance(config.inner.rate, float)
    assert "rate: 2.0" in to_yaml(config)


def test_unknown_and_mistyped_settings_are_errors():
    with pytest.raises(ConfigError, match="unknown setting.*inner.rat"):
        load_config(Outer, overrides=["inner.rat=1"])
    with pytest.raises(ConfigError, match="inner.enabled: expected true or false"):
        load_config(Outer, overrides=["inner.enabled=maybe"])
    with pytest.raises(ConfigError, match=r"inner.name: 'c' is not one of \['a', 'b'\]"):
        load_config(Outer, overrides=["inner.name=c"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["limit"])


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file is missing"):
        load_config(Outer, tmp_path / "none.yaml")


def test_yaml_is_parsed_safely(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("limit: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Outer, path)


def test_every_shipped_config_loads():
    from pathlib import Path

    from graphwsss.settings import RunSettings, supervision_defaults
    configs = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
    assert len(configs) >= 12
    for path in configs:
        supervision = path.stem.split("_")[0]
        settings = load_config(RunSettings, path, defaults=supervision_defaults(supervision))
        assert settings.supervision == supervision, path
