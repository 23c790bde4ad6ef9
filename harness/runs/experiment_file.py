"""Reading an experiment file: YAML with duplicate keys refused, overrides from the command
line, and every validation error named by file and key."""
from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from harness.data.images import EXPERIMENT_DESCRIPTOR_ENGINE
from harness.runs.experiment import Experiment, ExperimentError
from harness.runs.grid import expand_specs

__all__ = ["load"]


def _format_errors(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid experiment"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        allowed = e.get("ctx", {}).get("expected")
        message = e["msg"].removeprefix("Value error, ")
        lines.append(f"  {key}: {message}" + (f" (allowed: {allowed})" if allowed else ""))
    return "\n".join(lines)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    f"in the mapping starting on line {node.start_mark.line + 1}", node.start_mark,
                    f"key {key!r} appears twice (first on line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def _read_yaml(path: Path):
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ExperimentError(f"{path}: experiment file not found") from None
    except IsADirectoryError:
        raise ExperimentError(f"{path}: is a directory; expected an experiment YAML file") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ExperimentError(f"{path}: not a text file (byte {err.start} is not UTF-8); "
                              "expected an experiment YAML file") from None
    if "\0" in text:
        raise ExperimentError(f"{path}: not a text file (it contains NUL bytes); "
                              "expected an experiment YAML file")
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        raise ExperimentError(f"{path}: not valid YAML: {err}") from None


def load(path: str | Path, overrides: dict | None = None) -> Experiment:
    path = Path(path)
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise ExperimentError(f"{path}: expected a mapping at the top level")
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    prep = raw.get("preprocessing")
    if isinstance(prep, dict) and prep.get("representation") == "dlib_embedding":
        prep.setdefault("descriptor_engine", EXPERIMENT_DESCRIPTOR_ENGINE)
    try:
        experiment = Experiment.model_validate(raw)
        expand_specs(experiment)   # catches bad combinations before anything runs
    except ValidationError as err:
        raise ExperimentError(_format_errors(path, err)) from None
    except ValueError as err:
        raise ExperimentError(f"{path}: {err}") from None
    return experiment
