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


# --------------------------------------------------------------------------------------------
# Ranges declared next to the fields (graphwsss.settings.ranged), checked when loaded
# --------------------------------------------------------------------------------------------

def _settings_ranged():
    from graphwsss.settings import check_not_empty, ranged

    @dataclass
    class Ranged:
        count: int = ranged(1, ge=1)
        share: float = ranged(0.5, ge=0, le=1)
        rate: float = ranged(0.1, gt=0, lt=1)
        scales: tuple[float, ...] = ranged((1.0,), gt=0, check=check_not_empty)
        limit: int | None = ranged(None, ge=0, note="0 or null: all")
        inner: Inner = field(default_factory=Inner)

    return Ranged


def test_ranges_declared_next_to_fields_are_checked():
    ranged_cls = _settings_ranged()
    config = load_config(ranged_cls, overrides=["count=3", "share=1", "limit=0", "scales=[2]"])
    assert (config.count, config.share, config.limit, config.scales) == (3, 1.0, 0, (2.0,))
    assert load_config(ranged_cls).limit is None                  # None passes every range
    for override, message in [
        ("count=0", "count: 0 is out of range (allowed: >= 1)"),
        ("share=1.5", "share: 1.5 is out of range (allowed: >= 0 and <= 1)"),
        ("rate=1", "rate: 1.0 is out of range (allowed: > 0 and < 1)"),
        ("rate=.nan", "rate: nan is out of range (allowed: > 0 and < 1)"),
        ("scales=[1, 0]", "scales: [1.0, 0.0] is out of range (allowed: > 0, each item)"),
        ("scales=[]", "scales: [] must not be empty"),
        ("limit=-1", "limit: -1 is out of range (allowed: >= 0; 0 or null: all)"),
        ("limit=2.5", "limit: expected int, got 2.5"),
    ]:
        with pytest.raises(ConfigError) as error:
            load_config(ranged_cls, overrides=[override])
        assert str(error.value) == message, override


@pytest.mark.parametrize("override, message", [
    ("limit=-1", "limit: -1 is out of range (allowed: >= 0; 0 or null: every image)"),
    ("propagator.epochs_first=-1", "propagator.epochs_first: -1 is out of range (allowed: >= 0)"),
    ("cam.training.epochs=-2", "cam.training.epochs: -2 is out of range (allowed: >= 0)"),
    ("graph.radius=0", "graph.radius: 0 is out of range (allowed: >= 1)"),
    ("affinity.radius=0", "affinity.radius: 0 is out of range (allowed: >= 1)"),
    ("propagator.dropout=1", "propagator.dropout: 1.0 is out of range (allowed: >= 0 and < 1)"),
    ("cam.seed_fraction=1.5", "cam.seed_fraction: 1.5 is out of range (allowed: >= 0 and <= 1)"),
    ("propagator.lr=0", "propagator.lr: 0.0 is out of range (allowed: > 0)"),
    ("graph.sigma_rgb=-1", "graph.sigma_rgb: -1.0 is out of range (allowed: > 0)"),
    ("affinity.training.scale_range=[1.3, 0.7]",
     "affinity.training.scale_range: [1.3, 0.7] must be [low, high] with low <= high"),
    ("cam.inference_scales=[]", "cam.inference_scales: [] must not be empty"),
    ("backbone.output_stride=12", "backbone.output_stride: 12 is not one of [4, 8, 16, 32]"),
    ("device=tpu", "device: 'tpu' is not a device (allowed: auto, cpu, cuda, cuda:N)"),
    ("device=cuda0", "device: 'cuda0' is not a device (allowed: auto, cpu, cuda, cuda:N)"),
])
def test_run_settings_out_of_range_name_the_key(override, message):
    from graphwsss.settings import RunSettings

    with pytest.raises(ConfigError) as error:
        load_config(RunSettings, overrides=[override])
    assert str(error.value) == message


def test_limit_zero_or_none_means_every_image(sample_root):
    from graphwsss.settings import RunSettings
    from graphwsss.stages.run import open_dataset

    for limit, count in [(None, 12), (0, 12), (3, 3)]:
        value = "null" if limit is None else limit
        settings = load_config(RunSettings, overrides=[f"limit={value}"])
        assert settings.limit == limit
        assert len(open_dataset(sample_root, settings)[1]) == count


def test_device_setting_checks_cuda(monkeypatch):
    import torch

    from graphwsss.settings import RunSettings, check_device

    for device in ("auto", "cpu"):
        assert load_config(RunSettings, overrides=[f"device={device}"]).device == device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:0"):
        with pytest.raises(ConfigError, match=rf"^device: '{device}' needs CUDA, which is not "
                                              r"available here \(use device=cpu or device=auto\)$"):
            load_config(RunSettings, overrides=[f"device={device}"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda") is None and check_device("cuda:1") is None
    with pytest.raises(ConfigError, match=r"^device: 'cuda:2' names a CUDA device this machine "
                                          r"lacks \(it has cuda:0..cuda:1\)$"):
        load_config(RunSettings, overrides=["device=cuda:2"])


def test_settings_made_in_code_are_checked_by_run(tmp_path, sample_root):
    import dataclasses

    from graphwsss.settings import RunSettings
    from graphwsss.stages.run import run

    settings = RunSettings(graph=dataclasses.replace(RunSettings().graph, radius=0))
    with pytest.raises(ConfigError, match=r"^graph.radius: 0 is out of range"):
        run(sample_root, tmp_path / "run", settings)
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------
# Every setting is read somewhere (issue 12)
# --------------------------------------------------------------------------------------------

def _package_reads(package):
    """Per source file of ``package`` (but settings.py and config.py, which only define and load
    settings): the names it uses (``Name`` nodes, imports) and its attribute reads as
    ``(owner, attribute)`` pairs, ``owner`` the name or attribute left of the dot, or what a local
    alias was assigned from (``rule = settings.seeds`` makes ``rule.x`` a read of ``seeds.x``)."""
    import ast

    reads = []
    for path in sorted(package.rglob("*.py")):
        if path.name in ("settings.py", "config.py") and path.parent == package:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Assign, ast.AnnAssign, ast.NamedExpr)) \
                    and isinstance(node.value, ast.Attribute):
                for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                    if isinstance(target, ast.Name):
                        aliases[target.id] = node.value.attr
        names, pairs = set(), set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                names.add(node.id)
            elif isinstance(node, ast.alias):
                names.add(node.asname or node.name.rsplit(".", 1)[-1])
            elif isinstance(node, ast.Attribute):
                owner = node.value
                owner = owner.id if isinstance(owner, ast.Name) else \
                    owner.attr if isinstance(owner, ast.Attribute) else None
                pairs.add((owner, node.attr))
                pairs.add((aliases.get(owner, owner), node.attr))
        reads.append((path, names, pairs))
    return reads


def _unread_settings(settings_cls, reads):
    """Dotted keys of ``settings_cls`` (walked recursively) that no file reads: ``<parent>.<field>``
    (``settings.<field>`` at the top level) nowhere, nor ``.<field>`` in a file that names the
    field's dataclass (e.g. a function taking ``settings: PropagatorSettings``)."""
    import dataclasses

    unread = []

    def walk(cls, prefix, parent):
        for spec in dataclasses.fields(cls):
            if not any((parent, spec.name) in pairs
                       or (cls.__name__ in names and any(attr == spec.name for _, attr in pairs))
                       for _, names, pairs in reads):
                unread.append(prefix + spec.name)
            default = spec.default_factory() if spec.default_factory is not dataclasses.MISSING \
                else spec.default
            if dataclasses.is_dataclass(default):
                walk(type(default), f"{prefix}{spec.name}.", spec.name)

    walk(settings_cls, "", "settings")
    return unread


def test_every_setting_is_read_somewhere():
    from pathlib import Path

    import graphwsss
    from graphwsss.settings import RunSettings

    reads = _package_reads(Path(graphwsss.__file__).parent)
    assert _unread_settings(RunSettings, reads) == []


def test_a_setting_read_nowhere_is_found():
    """The check above fails for a new field nobody reads, even one whose name another section
    uses (``enabled`` of ``crf.enabled``)."""
    from pathlib import Path

    import graphwsss
    from graphwsss.settings import CRFSettings, GraphSettings, RunSettings

    @dataclass
    class NewGraph(GraphSettings):
        enabled: bool = True
        brand_new_knob: float = 1.0

    @dataclass
    class WithNew(RunSettings):
        graph: NewGraph = field(default_factory=NewGraph)
        crf: CRFSettings = field(default_factory=CRFSettings)
        unused_top_level: int = 0

    NewGraph.__name__ = "GraphSettings"          # as if added to the real class
    reads = _package_reads(Path(graphwsss.__file__).parent)
    assert _unread_settings(WithNew, reads) == ["graph.enabled", "graph.brand_new_knob",
                                                "unused_top_level"]


def test_packaged_config_found_by_bare_name(tmp_path, monkeypatch):
    from graphwsss.config import packaged_configs, resolve_config
    from graphwsss.settings import RunSettings

    monkeypatch.chdir(tmp_path)                  # no configs/ folder here
    assert "box_voc" in packaged_configs()
    for name in ("box_voc", "box_voc.yaml"):
        assert resolve_config(name).parent.name == "configs"
        assert resolve_config(name).parent.parent.name == "graphwsss"
    paper = load_config(RunSettings, "box_voc_paper")
    assert paper.propagator.epochs_first == 150
    (tmp_path / "box_voc.yaml").write_text("limit: 7\n")     # a path that exists wins
    assert load_config(RunSettings, "box_voc.yaml").limit == 7
    with pytest.raises(ConfigError, match="not a packaged config .*known: .*box_voc"):
        load_config(RunSettings, "box_vco")
    with pytest.raises(ConfigError, match="config file is missing"):
        load_config(RunSettings, "some/where/box_voc.yaml")


def test_every_entry_point_gets_the_supervision_defaults(tmp_path):
    """``load_run_settings``: the defaults of the supervision the overrides or the file name;
    the file and the overrides still win."""
    from graphwsss.settings import load_run_settings

    assert load_run_settings(None, ["supervision=scribble"]).propagator.reg_weight == 0.3
    assert load_run_settings(None, []).propagator.reg_weight == 0.01           # box
    config = tmp_path / "point.yaml"
    config.write_text("supervision: point\npropagator:\n  lr: 0.5\n")
    settings = load_run_settings(config, ["propagator.epochs_first=2"])
    assert settings.graph.radius == 3 and settings.propagator.lr == 0.5
    assert settings.propagator.epochs_first == 2 and settings.propagator.epochs_second == 50
    assert settings.propagator.output_walk                                     # point
    assert settings.propagator.output_walk_box_reach is None
    box = load_run_settings(None, []).propagator                               # box
    assert box.output_walk and box.output_walk_box_reach == 0.2
    image = load_run_settings(config, supervision="image")
    assert image.supervision == "image" and image.propagator.output_walk
