"""Every ```yaml block of README.md and of docs/ (docs/*.md and below, so docs/recipes/*.md too)
loads through the loader the command line uses for its kind.

A block's kind is read from its top-level keys:

- an ablation (a key only an ablation file has: `grid`, `variants`, `rows`, ...) goes through
  `mipet-tune ablate --config BLOCK --dry-run`;
- a sweep (a key only a sweep file has: `space`, `num_samples`, `metric`, ..., or only keys that
  both share, such as `name` and `base`) goes through `mipet-tune sweep --config BLOCK
  --dry-run`, which reads the spec, validates the search space at every corner and estimates the
  time (with `--throughput`, so nothing is measured);
- a run config (only `model`, `data`, `train`, `eval`, `seed`, and an exported config's
  `metrics` and `provenance`) goes through `RunConfig.from_dict(read_yaml(BLOCK))`, what
  `mipet-tune train --config` reads;
- a search space (a `params:` mapping, or a fragment whose keys are all "/" paths such as a bare
  `model/beta:` list) goes through the search-space loader inside a minimal sweep
  (`sweep --dry-run` with the space inline). A fragment's `when:` may name a parent it does not
  declare (`model/name`, typically): the minimal sweep then declares that parent first, as a
  choice of every value the fragment's conditions name.

Blocks are loaded from the repository's root, so a block may name a file of the repo
(`space: examples/...`) as a user there would. Any other block fails, naming its file and line.

A block that is deliberately not a config (a piece of a larger file that cannot stand alone) is
marked by the HTML comment `<!-- not-a-config -->` on the nearest non-blank line above its
opening fence; it must still parse as YAML.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml

from models.errors import ConfigError
from tune.cli.commands import main
from tune.config.run import EXPORT_EXTRA_KEYS, SECTIONS, RunConfig, read_yaml
from tune.config.sweep import SWEEP_KEYS
from tune.sweep.ablate import AblationSpec

ROOT = Path(__file__).resolve().parents[1]
MARK = "<!-- not-a-config -->"
_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")

ABLATION_ONLY = {f.name for f in dataclasses.fields(AblationSpec)} - set(SWEEP_KEYS)
SWEEP_ONLY = set(SWEEP_KEYS) - {f.name for f in dataclasses.fields(AblationSpec)}
RUN_KEYS = set(SECTIONS) | set(EXPORT_EXTRA_KEYS)
THROUGHPUT = ["--throughput", "1000"]  # images/s: the estimate measures nothing


class Block(NamedTuple):
    file: Path
    line: int  # of the opening fence, 1-based
    text: str
    marked: bool

    @property
    def where(self) -> str:
        return f"{self.file.relative_to(ROOT)}:{self.line}"


def yaml_blocks(path: Path) -> list[Block]:
    """The ```yaml blocks of a Markdown file, dedented by their fence's indent (a block inside
    a list item), each with its line and whether `MARK` precedes it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, start = m["indent"], i
        i += 1
        body = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        i += 1  # the closing fence
        if m["lang"] not in ("yaml", "yml"):
            continue
        above = next((ln.strip() for ln in reversed(lines[:start]) if ln.strip()), "")
        blocks.append(Block(path, start + 1, "\n".join(body) + "\n", above == MARK))
    return blocks


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


BLOCKS = [b for doc in documents() for b in yaml_blocks(doc)]


def kind_of(data: Any) -> str | None:
    """"ablation", "sweep", "run", "space" or None (see the module docstring)."""
    if not isinstance(data, dict) or not data:
        return None
    keys = set(map(str, data))
    if keys & ABLATION_ONLY:
        return "ablation"
    if keys & SWEEP_ONLY:
        return "sweep"
    if keys <= RUN_KEYS:
        return "run"
    if "params" in keys or all("/" in k for k in keys):
        return "space"
    if keys <= set(SWEEP_KEYS):
        return "sweep"
    return None


def minimal_sweep(space: dict[str, Any]) -> dict[str, Any]:
    """A short sweep around a search space or a fragment of one (its parameters alone)."""
    if "params" not in space:
        declared = set(space)
        parents: dict[str, list[Any]] = {}
        for spec in space.values():
            for alt in spec if isinstance(spec, list) else [spec]:
                for parent, allowed in ((alt or {}).get("when") or {}).items():
                    if parent not in declared:
                        values = allowed if isinstance(allowed, list) else [allowed]
                        parents.setdefault(parent, [])
                        parents[parent] += [v for v in values if v not in parents[parent]]
        space = {"params": {**{p: {"choices": v} for p, v in parents.items()}, **space}}
    return {"name": "block", "base": {"data": {"name": "dsprites"}, "train": {"steps": 10}},
            "space": space, "num_samples": 1}


def check_block(block: Block, tmp_path: Path, capsys) -> None:
    """Load `block` through the command line's loader for its kind; fail naming its line."""
    try:
        data = yaml.safe_load(block.text)
    except yaml.YAMLError as exc:
        pytest.fail(f"{block.where}: not YAML: {exc}")
    if block.marked:
        return
    kind = kind_of(data)
    if kind is None:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        pytest.fail(f"{block.where}: a yaml block that is no sweep, ablation, run config or "
                    f"search space (top level: {keys}); fix it or mark it {MARK}")
    path = tmp_path / f"block{block.line}.yaml"
    if kind == "space":
        data = minimal_sweep(data)
        kind = "sweep"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    else:
        path.write_text(block.text)
    if kind == "run":
        try:
            RunConfig.from_dict(read_yaml(path))
        except ConfigError as exc:
            pytest.fail(f"{block.where}: a run config that `train --config` refuses: {exc}")
        return
    command = "sweep" if kind == "sweep" else "ablate"
    code = main([command, "--config", str(path), "--dry-run", *THROUGHPUT])
    out, err = capsys.readouterr()
    if code != 0 or "estimated training time" not in out:
        pytest.fail(f"{block.where}: a {kind} block that `mipet-tune {command} --config BLOCK "
                    f"--dry-run` refuses (exit {code}): {err.strip()}")


def test_the_documents_have_yaml_blocks() -> None:
    assert len([b for b in BLOCKS if b.file.name == "README.md"]) >= 2


@pytest.mark.parametrize("block", BLOCKS, ids=[b.where for b in BLOCKS])
def test_yaml_block_loads_through_the_cli(block: Block, tmp_path: Path, capsys,
                                          monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # a block may name a file of the repo (examples/...) as a user would
    check_block(block, tmp_path, capsys)


# ---- the checker itself --------------------------------------------------------------------
def _doc(tmp_path: Path, text: str) -> list[Block]:
    path = tmp_path / "doc.md"
    path.write_text(text)
    return [b._replace(file=ROOT / "doc.md") for b in yaml_blocks(path)]


def test_blocks_are_found_with_their_lines_indents_and_marks(tmp_path: Path) -> None:
    blocks = _doc(tmp_path, "# t\n\n```yaml\na: 1\n```\n\n- item:\n  ```yaml\n  b: 2\n  ```\n"
                            "```bash\nc: 3\n```\n<!-- not-a-config -->\n\n```yaml\nd: [\n```\n")
    assert [(b.line, b.text, b.marked) for b in blocks] == [
        (3, "a: 1\n", False), (8, "b: 2\n", False), (16, "d: [\n", True)]


def test_the_kinds(tmp_path: Path) -> None:
    assert kind_of({"name": "x", "grid": {"model/beta": [1]}}) == "ablation"
    assert kind_of({"space": "quick", "num_samples": 2}) == "sweep"
    assert kind_of({"name": "x", "base": {}}) == "sweep"
    assert kind_of({"model": {"name": "beta_vae"}, "seed": 1}) == "run"
    assert kind_of({"model/beta": [{"low": 1.0, "high": 2.0}]}) == "space"
    assert kind_of({"params": {}}) == "space"
    assert kind_of({"banana": 1}) is None and kind_of([1, 2]) is None


def test_a_broken_sweep_block_fails_with_its_line(tmp_path: Path, capsys) -> None:
    # the README's example before it was fixed: hy_rec conditioned on a model not in choices
    [block] = _doc(tmp_path, "text\n\n```yaml\nbase: {train: {steps: 10}}\nspace:\n  params:\n"
                             "    model/name: {choices: [mipet_vae, mipet_betatcvae]}\n"
                             "    model/hy_rec: {low: 0.01, high: 1.0, "
                             "when: {model/name: mipet_commutative}}\n```\n")
    with pytest.raises(pytest.fail.Exception, match=r"doc\.md:3: .*mipet_commutative"):
        check_block(block, tmp_path, capsys)


def test_an_unknown_block_fails_unless_marked(tmp_path: Path, capsys) -> None:
    plain, marked = _doc(tmp_path, "```yaml\nbanana: 1\n```\n<!-- not-a-config -->\n"
                                   "```yaml\nbanana: 1\n```\n")
    with pytest.raises(pytest.fail.Exception, match=r"doc\.md:1: a yaml block that is no sweep"):
        check_block(plain, tmp_path, capsys)
    check_block(marked, tmp_path, capsys)


def test_a_fragment_gets_the_parent_its_conditions_name(tmp_path: Path, capsys) -> None:
    fragment = {"model/beta": [
        {"low": 1.0, "high": 16.0, "when": {"model/name": ["beta_vae", "mipet_vae"]}},
        {"low": 1.0, "high": 10.0, "when": {"model/name": "betatcvae"}}]}
    sweep = minimal_sweep(fragment)
    assert list(sweep["space"]["params"]) == ["model/name", "model/beta"]
    assert sweep["space"]["params"]["model/name"] == {
        "choices": ["beta_vae", "mipet_vae", "betatcvae"]}
    bad = {"model/beta": [{"low": 1.0, "high": 16.0, "when": {"model/name": "beta_vae"}},
                          {"low": 1.0, "high": 10.0, "when": {"model/name": "beta_vae"}}]}
    [block] = _doc(tmp_path, "```yaml\n" + yaml.safe_dump(bad) + "```\n")
    with pytest.raises(pytest.fail.Exception, match=r"doc\.md:1: "):
        check_block(block, tmp_path, capsys)
