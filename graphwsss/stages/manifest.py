"""Honest resumes (issue 14.3): which settings shaped each stage's outputs, kept in
``<run>/stages.json``, and the check a rerun makes against them before any stage runs.

``stages.json`` holds, per stage that has run in the folder, the settings that shape its
outputs (dotted keys) and the seconds spent making them (summed over resumptions). A rerun whose
settings differ for a stage with outputs stops with one line naming the keys (exit 2), or, with
``force``, deletes that stage's outputs and everything after it so that they are recomputed.
Settings that change nothing in the labels (``limit``, ``device``, ``report_images``, DataLoader
workers, memory budgets) are not compared.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from graphwsss.config import ConfigError, to_yaml
from graphwsss.settings import RunSettings
from graphwsss.utils.io import atomic_write
from graphwsss.utils.runtime import get_logger

log = get_logger(__name__)

STAGES = ("cam", "seeds", "affinity", "propagation", "refine", "segment")
# What each stage writes (folders and files under the run folder), in stage order.
STAGE_OUTPUTS = {"cam": ("cam", "cams"), "seeds": ("seeds", "affinity_seeds"),
                 "affinity": ("affinity",), "propagation": ("probabilities",),
                 "refine": ("pseudo_labels", "instances", "annotations.json"),
                 "segment": ("segmenter",)}
RUN_OUTPUTS = ("metrics.json", "report.html")   # made from every stage: always redone
# Every stage of a run, in order: the file stages above, then the run-level ones.
RUN_STAGES = STAGES + ("evaluate", "report")
MANIFEST = "stages.json"

# Keys (dotted prefixes) that change nothing in any output.
NEUTRAL = ("limit", "device", "report_images", "cam.training.workers",
           "affinity.training.workers", "propagator.memory_budget_gb",
           "segmenter.training.workers")
# Keys of the cam stage that only later stages read.
CAM_LATER = ("cam.seed_fraction", "cam.background_threshold", "cam.background_power",
             "cam.random_walk_share")


def flatten(values: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _matches(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == prefix or key.startswith(prefix + ".") for prefix in prefixes)


def uses_cams(settings: RunSettings) -> bool:
    """Whether the run trains the CAM network: for seeds from weak labels other than boxes (or
    box runs with ``seeds.cam_fusion``); with seeds from files, only image-tag runs (their
    propagation fuses the CAMs' random walk)."""
    if settings.seeds.source == "files":
        return settings.supervision == "image"
    return settings.supervision != "box" or settings.seeds.cam_fusion


def uses_graph(settings: RunSettings) -> bool:
    """Whether the propagation reads its graphs: every propagator but ``none`` (a per-node
    classifier), and always in image-tag runs (the CAMs' random walk runs over the graph)."""
    return settings.propagator.name != "none" or settings.supervision == "image"


def uses_affinity_network(settings: RunSettings) -> bool:
    """Whether the run trains (or loads) the affinity CNN: ``graph.builder=affinity`` in a run
    that reads its graphs (:func:`uses_graph`). Its node features are the frozen backbone's
    either way, so a ``none`` run is the same without it."""
    return settings.graph.builder == "affinity" and uses_graph(settings)


def stage_keys(settings: RunSettings) -> dict[str, dict[str, Any]]:
    """The settings that shape each stage's outputs in this run (stages that run in it only)."""
    flat = {key: value for key, value in flatten(yaml.safe_load(to_yaml(settings))).items()
            if not _matches(key, NEUTRAL)}

    def pick(*prefixes: str) -> dict[str, Any]:
        return {key: value for key, value in flat.items() if _matches(key, prefixes)}

    common = pick("supervision", "split", "seed", "max_side", "seeds.tags_file")
    keys: dict[str, dict[str, Any]] = {}
    if uses_cams(settings):
        keys["cam"] = {key: value for key, value in {**common, **pick("backbone", "cam")}.items()
                       if not _matches(key, CAM_LATER)}
    seeds = {**common, **pick("seeds")}
    if uses_cams(settings):
        seeds.update(keys["cam"])
        seeds.update(pick("cam.seed_fraction", "cam.background_threshold"))
    keys["seeds"] = seeds
    if uses_affinity_network(settings):
        keys["affinity"] = {**seeds, **pick("affinity", "backbone")}
    keys["propagation"] = {**keys.get("affinity", seeds),
                           **pick("graph", "propagator", "backbone")}
    if settings.supervision == "image":
        keys["propagation"].update(pick("cam.background_power", "cam.random_walk_share"))
    keys["refine"] = {**keys["propagation"], **pick("crf", "refine")}
    if settings.segmenter.rounds:     # refinement rounds replace the pseudo labels (§9)
        keys["segment"] = {**keys["refine"], **pick("segmenter")}
    return keys


def has_outputs(root: Path, stage: str) -> bool:
    for name in STAGE_OUTPUTS[stage]:
        path = root / name
        if path.is_dir() and any(path.iterdir()):
            return True
    return False


def read_manifest(root: Path) -> dict[str, dict]:
    """``stages.json``; for a run folder from before it, every stage with outputs is taken to
    have been made with the settings of its ``config.yaml`` (as that run wrote them)."""
    path = root / MANIFEST
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    config = root / "config.yaml"
    if not config.is_file():
        return {}
    flat = flatten(yaml.safe_load(config.read_text(encoding="utf-8")) or {})
    return {stage: {"settings": flat, "seconds": None, "legacy": True}
            for stage in STAGES if has_outputs(root, stage)}


def _differences(recorded: dict[str, Any], current: dict[str, Any],
                 legacy: bool = False) -> list[str]:
    """The keys that shape the stage now (``current``) whose value differs from the record. A
    recorded key the stage no longer reads (removed from graphwsss, or moved to another stage,
    as ``crf.*`` moved from propagation to refine) changes nothing in its outputs."""
    keys = set(current)
    return sorted(key for key in keys if recorded.get(key, _MISSING) != current.get(key, _MISSING)
                  and not (legacy and key not in recorded)
                  and not _added_at_default(key, recorded, current))


# Settings added with a default that changes the outputs: the value that made outputs recorded
# before the setting existed (``graph.calibrate``: those graphs used exp(-d)). A setting added
# with its class default off (``propagator.output_walk``, ``output_walk_box_reach``) needs no
# entry: a value other than the class default already counts as a change.
BEFORE_ADDED = {"graph.calibrate": False}


def _added_at_default(key: str, recorded: dict[str, Any], current: dict[str, Any]) -> bool:
    """A setting added to graphwsss after the outputs were made (absent from their record) and
    now at its default (e.g. ``seeds.source=weak_labels``) changed nothing in them, unless its
    default changes the outputs (:data:`BEFORE_ADDED`: then it matches only that old value)."""
    if key in recorded or key not in current:
        return False
    if key in BEFORE_ADDED:
        return current[key] == BEFORE_ADDED[key]
    defaults = flatten(yaml.safe_load(to_yaml(RunSettings())))
    return key in defaults and defaults[key] == current[key]


_MISSING = object()


def check_stages(root: Path, settings: RunSettings, force: bool = False) -> dict[str, dict]:
    """Compare this run's settings with those that made the outputs under ``root``.

    The first stage (in order) whose outputs exist and whose settings differ: without ``force``,
    :class:`ConfigError` naming the keys, the stage and how to proceed; with ``force``, that
    stage's outputs and every later stage's (and metrics.json, report.html) are deleted.
    Returns the manifest to keep (the stages still on disk): a record whose stage has no
    outputs left (its folder deleted by hand, or never copied) is dropped, so that the stage's
    time starts again from zero when it is recomputed.
    """
    manifest = {stage: entry for stage, entry in read_manifest(root).items()
                if stage not in STAGES or has_outputs(root, stage)}
    current = stage_keys(settings)
    for index, stage in enumerate(STAGES):
        if stage not in manifest:          # kept above only when its outputs are on disk
            continue
        entry = manifest[stage]
        # A stage this run skips (no CAMs, no affinity CNN) is compared on nothing.
        changed = _differences(entry["settings"], current.get(stage, entry["settings"]),
                               legacy=entry.get("legacy", False))
        if not changed:
            continue
        shown, more = _describe(changed, entry["settings"], current[stage])
        if not force:
            raise ConfigError(
                f"{root}: settings {shown}{more} differ from those that made the {stage} "
                f"stage's outputs in this folder; use a new --out, or --force to recompute "
                f"{stage} and what follows")
        later = STAGES[index:]
        log.warning("--force: settings %s%s differ for the %s stage; deleting the outputs of %s "
                    "to recompute them", shown, more, stage, ", ".join(later))
        remove_outputs(root, later)
        return {name: value for name, value in manifest.items() if name not in later}
    return manifest


def parse_stages(text: str) -> tuple[str, ...]:
    """``"refine,evaluate"`` -> the named stages in run order (:class:`ConfigError` for a name
    that is not a stage, or none at all)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in RUN_STAGES]
    if unknown or not names:
        problem = f"unknown stage {', '.join(unknown)}" if unknown else "no stage named"
        raise ConfigError(f"--stages {text!r}: {problem}; the stages are {', '.join(RUN_STAGES)}")
    return tuple(stage for stage in RUN_STAGES if stage in names)


def plan_stages(root: Path, settings: RunSettings, stages: tuple[str, ...],
                delete: bool = True) -> dict[str, dict]:
    """Prepare a run of ``stages`` only (in run order): every stage this run uses before the
    first named file stage must have been made with the current settings (else
    :class:`ConfigError`: its files would not match), every stage used between the named ones
    must be named too (it reads what the one before writes); then (``delete``) the files of the
    named stages and of every later one are deleted, with metrics.json and report.html.
    Returns the manifest of the stages kept."""
    current = stage_keys(settings)
    used = [stage for stage in STAGES if stage in current]
    named = [stage for stage in used if stage in stages]
    skipped = [stage for stage in stages if stage in STAGES and stage not in current]
    if skipped:
        log.info("--stages: %s not used by this run's settings", ", ".join(skipped))
    if named:
        between = [stage for stage in used[used.index(named[0]):used.index(named[-1])]
                   if stage not in named]
        if between:
            raise ConfigError(f"--stages {','.join(stages)}: {', '.join(between)} lies between "
                              f"the stages named and reads what they write; add it to --stages")
    first = used.index(named[0]) if named else len(used)
    manifest = read_manifest(root)
    for stage in used[:first]:
        entry = manifest.get(stage)
        if entry is None:
            continue                      # checked by the stage itself: its inputs are missing
        changed = _differences(entry["settings"], current[stage],
                               legacy=entry.get("legacy", False))
        if changed:
            shown, more = _describe(changed, entry["settings"], current[stage])
            raise ConfigError(f"{root}: settings {shown}{more} differ from those that made the {stage} "
                              f"stage's outputs; add {stage} to --stages, or run without --stages "
                              "and with --force")
    later = tuple(STAGES[STAGES.index(used[first]):]) if named else ()
    if delete and later:
        stale = [stage for stage in later if stage in current and stage not in named]
        log.info("--stages: recomputing %s; deleting their outputs%s", ", ".join(named),
                 f" and the stale ones of {', '.join(stale)}" if stale else "")
        remove_outputs(root, later)
    elif delete and "evaluate" in stages:
        for name in RUN_OUTPUTS:
            (root / name).unlink(missing_ok=True)
    return {name: value for name, value in manifest.items() if name not in later}


def _describe(changed: list[str], recorded: dict[str, Any], current: dict[str, Any],
              shown: int = 6) -> tuple[str, str]:
    """``("key (old -> new), ...", " and N more")`` for the first ``shown`` changed keys."""
    listed = ", ".join(f"{key} ({_show(recorded.get(key, _MISSING))} -> "
                       f"{_show(current.get(key, _MISSING))})" for key in changed[:shown])
    return listed, (f" and {len(changed) - shown} more" if len(changed) > shown else "")


def _show(value: Any) -> str:
    return "unset" if value is _MISSING else json.dumps(value)


def remove_outputs(root: Path, stages: tuple[str, ...]) -> None:
    """Delete what ``stages`` wrote under ``root`` (and the run-level files), nothing else."""
    for stage in stages:
        for name in STAGE_OUTPUTS[stage]:
            path = root / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    for name in RUN_OUTPUTS:
        (root / name).unlink(missing_ok=True)


def write_manifest(root: Path, manifest: dict[str, dict], settings: RunSettings,
                   seconds: dict[str, float]) -> dict[str, dict]:
    """Record the settings of every stage of this run and add this call's ``seconds`` to each
    stage's total; returns the manifest written."""
    updated = {}
    for stage, keys in stage_keys(settings).items():
        before = manifest.get(stage, {}).get("seconds") or 0.0
        updated[stage] = {"settings": keys,
                          "seconds": round(before + seconds.get(stage, 0.0), 2)}
    for stage, entry in manifest.items():       # stages this run skips keep their record
        updated.setdefault(stage, entry)
    atomic_write(root / MANIFEST, json.dumps(updated, indent=1, sort_keys=True))
    return updated
