"""Optuna search spaces as data: presets, YAML files or Python modules over "/"-paths of the run
config (`"model/beta"`), checked before anything runs.

    >>> from search_spaces import load_space, define_by_run
    >>> space = load_space("paper")            # or a YAML path, or "pkg.module:SPACE"
    >>> print(space.describe())                # doctest: +SKIP
    >>> searcher_space = define_by_run(space)  # OptunaSearch(searcher_space, ...); pickles

The YAML form::

    params:                                   # suggested in this order
      model/name: {choices: [mipet_vae, mipet_commutative]}
      model/beta: {low: 1.0, high: 16.0, log: true, when: {model/name: mipet_vae}}
      model/num_ipe: {low: 1, high: 5, type: int, when: {model/name: mipet_vae}}
      model/hy_rec: {low: 0.01, high: 1.0, log: true, when: {model/name: mipet_commutative}}
      train/weight_decay: {choices: [0.0, 1.0e-4]}
    fixed:                                    # merged into every trial's config
      train/lr: 4.0e-4

A path whose range depends on a condition is a list of alternatives, each with its own `when`;
at most one may apply in a trial, and all share kind, `log` and choices (Optuna keeps one
distribution per name, still the path)::

      model/beta:
        - {low: 1.0, high: 16.0, log: true, when: {model/name: [beta_vae, mipet_vae]}}
        - {low: 1.0, high: 10.0, log: true, when: {model/name: [betatcvae, mipet_betatcvae]}}
"""

from __future__ import annotations

from search_spaces._load import DefineByRun, define_by_run, load_space, preset_names, read_space
from search_spaces._param import Param
from search_spaces._space import SearchSpace, from_distributions
from search_spaces._values import FrozenMap, same_value

__all__ = [
    "DefineByRun",
    "FrozenMap",
    "Param",
    "SearchSpace",
    "define_by_run",
    "from_distributions",
    "load_space",
    "preset_names",
    "read_space",
    "same_value",
]
