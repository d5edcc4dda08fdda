"""The one YAML reader of configs, sweep specs, search spaces, ablation files and `--set` values:
duplicate keys fail, and `1e-4` is a float (YAML 1.2), not a string.

It lives in `models` (next to `models.strict`, with no torch) because `tune` and `search_spaces`
both read YAML and both may import `models`; `analysis`, which imports nothing of ours, reads only
the `sweep.yaml` that the sweep engine wrote with `yaml.safe_dump` (floats always with a dot).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from models.errors import ConfigError

# PyYAML follows YAML 1.1, where a float needs a dot: `1e-4` would load as the string "1e-4".
# Configs and search spaces are full of such numbers, so this loader reads them as YAML 1.2 does.
_FLOAT_12 = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.VERBOSE,
)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicated mapping keys (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key; the base class reports it
                break
            if first is not None:
                raise ConfigError(
                    f"duplicated key {key!r} at line {line} (first at line {first}); "
                    "each key may appear once"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))


def loads(text: str, where: str) -> Any:
    """Parse YAML text; syntax errors and duplicated keys become one-line ConfigErrors."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML{at}: {problem}") from None


def read(path: str | Path, what: str = "file") -> Any:
    """Read a YAML file strictly (see `loads`); a missing file is `"<path>: no such <what>"`."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such {what}")
    return loads(p.read_text(encoding="utf-8"), str(p))


def read_mapping(path: str | Path, what: str = "file") -> dict[str, Any]:
    """Read a YAML file that holds a mapping (an empty file is `{}`)."""
    loaded = read(path, what)
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"{path}: expected a YAML mapping at the top, got {type(loaded).__name__}"
        )
    return loaded


def scalar(text: str) -> Any:
    """A `--set PATH=VALUE` value: the YAML scalar it spells (`1e-4` a float, `true` a bool),
    or the text itself when it is not valid YAML; empty text is None."""
    if not text.strip():
        return None
    try:
        return loads(text, "--set value")
    except ConfigError:
        return text


def dumps(data: Any) -> str:
    """YAML text for a plain dict, keys in insertion order."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
