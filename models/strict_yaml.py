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
    """Read a YAML file strictly (see `loads`). A missing file, a directory, an unreadable file
    and one that is not UTF-8 text (a binary file) are each one-line ConfigErrors."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p}: is a directory, not a {what}; give the YAML file inside it")
    if not p.is_file():
        raise ConfigError(f"{p}: no such {what}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{p}: not a text file (byte {exc.start} is not UTF-8); a {what} is YAML text"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the {what} ({exc.strerror or exc})") from None
    return loads(text, str(p))


def read_mapping(path: str | Path, what: str = "file") -> dict[str, Any]:
    """Read a YAML file that holds a mapping of settings; an empty file (or one of comments
    only) and any other top-level value are one-line ConfigErrors."""
    loaded = read(path, what)
    if loaded is None:
        raise ConfigError(
            f"{path}: the {what} is empty; it should hold a YAML mapping of settings, "
            "for example `train: {steps: 1000}`"
        )
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"{path}: expected a YAML mapping of settings at the top, got "
            f"{type(loaded).__name__} {_excerpt(loaded)}"
        )
    return loaded


def _excerpt(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


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
