"""docs/recipes/add_metric.md, followed: a toy metric from a temporary module, registered with
one line, runs under every protocol and is known to configs and the trials table."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
from _synthetic import table

from analysis.errors import AnalysisError
from analysis.metrics import METRIC_KEYS, Metric, evaluate, register, unregister
from analysis.metrics.synthetic import SyntheticData, factor_representation
from analysis.rank import rank
from analysis.trials import HIGHER_IS_BETTER, LOWER_IS_BETTER, direction

TOY = '''
from __future__ import annotations

import numpy as np

from analysis.metrics._utils import check_positive, check_random_state, sample_codes


CALLS = []  # (entry point, number of codes) of each call, for the test to read


def spread_from_codes(codes, factors):
    CALLS.append(("from_codes", len(codes)))
    return float(np.mean(np.std(codes, axis=0)))


def spread(data, represent, random_state, *, num_train=400, batch_size=16):
    check_random_state(random_state, "toy_spread")
    check_positive("toy_spread", num_train=num_train, batch_size=batch_size)
    codes, factors = sample_codes(data, represent, num_train, random_state, batch_size, "toy")
    CALLS.append(("function", len(codes)))
    return {"toy_spread": float(np.mean(np.std(codes, axis=0)))}
'''

BUDGETS = {"dlib": {}, "fast": {"num_train": 50, "batch_size": 25},
           "mipet": {"num_train": 64, "batch_size": 8}}


def toy_record(**change) -> Metric:
    fields = dict(name="toy_spread", function="toy_metric_module:spread",
                  from_codes="toy_metric_module:spread_from_codes",
                  keys={"toy_spread": "min"}, budgets=BUDGETS, needs_factors=False,
                  bounded=False, scale_invariant=False, latent_order_invariant=True,
                  reference="tests/test_recipe_metric.py")
    fields.update(change)
    return Metric(**fields)


@pytest.fixture
def toy(tmp_path, monkeypatch):
    (tmp_path / "toy_metric_module.py").write_text(textwrap.dedent(TOY))
    monkeypatch.syspath_prepend(str(tmp_path))
    record = register(toy_record())  # the recipe's one line
    yield record
    unregister("toy_spread")
    sys.modules.pop("toy_metric_module", None)


def test_evaluate_runs_the_toy_metric_under_every_protocol(toy) -> None:
    data = SyntheticData((3, 4))
    rep = factor_representation(data)
    got = {p: evaluate(data, rep, metrics=["toy_spread"], protocol=p, seed=1)["toy_spread"]
           for p in ("dlib", "fast", "mipet")}
    # The budgets reached it: dlib the function's defaults, fast its budget, mipet the shared
    # sample through the fixed-data core.
    calls = sys.modules["toy_metric_module"].CALLS
    assert calls == [("function", 400), ("function", 50), ("from_codes", 64)]
    assert all(type(v) is float and 0 < v < 1 for v in got.values())
    # dlib: the function with a fresh RandomState(seed); the same call gives the same value.
    direct = toy.load()(data, rep, np.random.RandomState(1))["toy_spread"]
    assert got["dlib"] == direct
    with pytest.raises(AnalysisError, match="budget overrides|Unknown metric"):
        evaluate(data, rep, metrics=["toy_spread"], toy_sprad={"num_train": 10})


def test_configs_and_the_trials_table_know_the_toy_metric(toy) -> None:
    from tune.config.run import EvalConfig

    assert METRIC_KEYS["toy_spread"] == ("toy_spread",)
    assert EvalConfig(metrics=("toy_spread", "mig")).metrics == ("toy_spread", "mig")
    assert direction("eval/toy_spread") == "min" and direction("fast/toy_spread") == "min"
    assert "toy_spread" in LOWER_IS_BETTER and "toy_spread" not in HIGHER_IS_BETTER
    df = table([{"config/model/beta": b, "eval/toy_spread": s}
                for b, s in ((1.0, 0.3), (2.0, 0.1), (4.0, 0.2))])
    ranked = rank(df, by="toy_spread")
    assert ranked.attrs["directions"] == {"eval/toy_spread": "min"}
    assert list(ranked["config/model/beta"])[:1] == [2.0]  # the smallest spread first


def test_without_registration_it_is_unknown_everywhere() -> None:
    from models.errors import ConfigError
    from tune.config.run import EvalConfig

    assert "toy_spread" not in METRIC_KEYS
    with pytest.raises(AnalysisError, match="no registered metric returns 'toy_spread'"):
        direction("eval/toy_spread")
    with pytest.raises(ConfigError, match="unknown metric 'toy_spread'"):
        EvalConfig(metrics=("toy_spread",))
    with pytest.raises(AnalysisError, match="Unknown metric 'toy_spread'"):
        evaluate(SyntheticData((3,)), lambda o: o[:, 0, :, 0], metrics=["toy_spread"])


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"budgets": {"dlib": {}, "mipet": None}}, "no budgets for protocol 'fast'"),
        ({"budgets": {**BUDGETS, "quick": {}}}, "unknown protocol 'quick'"),
        ({"budgets": {**BUDGETS, "fast": 50}}, r"budgets\['fast'\] must be a dict"),
        ({"keys": {"toy_spread": None}}, "direction None; give 'max'"),
        ({"keys": {"toy_spread": "up"}}, "direction 'up'"),
        ({"keys": ("toy_spread",)}, "keys must map each result key"),
        ({"function": "toy_metric_module.spread"}, "'package.module:function'"),
        ({"name": "toy-spread"}, "identifier"),
        ({"group": True}, "min_models >= 2"),
    ],
)
def test_a_record_missing_a_part_fails_when_built(change, match) -> None:
    with pytest.raises(AnalysisError, match=match):
        toy_record(**change)


def test_a_record_without_a_required_field_fails_when_built() -> None:
    fields = dict(name="toy_spread", function="m:f", keys={"k": "max"}, budgets=BUDGETS,
                  bounded=False, scale_invariant=False, latent_order_invariant=True,
                  reference="-")
    with pytest.raises(TypeError, match="needs_factors"):
        Metric(**fields)


def test_register_refuses_clashes(toy) -> None:
    with pytest.raises(AnalysisError, match="already registered"):
        register(toy_record())
    with pytest.raises(AnalysisError, match="returns key 'mig', which metric 'mig'"):
        register(toy_record(name="other", keys={"mig": "max"}))
    with pytest.raises(AnalysisError, match="built-in"):
        unregister("mig")
