"""Reading search-space YAML: duplicate keys fail, and `1e-4` is a float (YAML 1.2), not a string."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from models.errors import ConfigError

# PyYAML follows YAML 1.1, where a float needs a dot: `1e-4` would load as the string "1e-4".
# Search spaces are full of such numbers, so this loader reads them as YAML 1.2 does.
_FLOAT_12 = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.VERBOSE,
)


class _SpaceLoader(yaml.SafeLoader):
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


_SpaceLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))


def loads(text: str, where: str) -> Any:
    """Parse YAML text; syntax errors and duplicated keys become one-line ConfigErrors."""
    try:
        return yaml.load(text, Loader=_SpaceLoader)  # a SafeLoader subclass
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML{at}: {problem}") from None


def read(path: Path) -> Any:
    """Read a YAML file strictly (see `loads`)."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such search-space file")
    return loads(path.read_text(encoding="utf-8"), str(path))


def dumps(data: Any) -> str:
    """YAML text for a plain dict, keys in insertion order."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
