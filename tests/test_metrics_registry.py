"""The metric registry's contract, walked record by record: every part a record names exists
and fits its function; the registry is light to import; non-finite codes are told by class."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import analysis.metrics as metrics
from analysis.errors import AnalysisError
from analysis.metrics import registry
from analysis.metrics.synthetic import SyntheticData
from analysis.trials import NONFINITE_WORDS, direction

ROOT = Path(__file__).resolve().parents[1]
RECORDS = registry.registered()


def _fresh(code: str) -> str:
    """Run ``code`` in a fresh interpreter; its stdout (it must succeed)."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _params(fn) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(fn).parameters)


@pytest.mark.parametrize("rec", RECORDS, ids=[r.name for r in RECORDS])
def test_every_budget_names_arguments_of_its_function(rec) -> None:
    params = _params(rec.load())
    fixed = ("data", "represent_fns" if rec.group else "represent", "random_state")
    assert tuple(params)[:3] == fixed, rec.name
    for protocol in registry.PROTOCOL_NAMES:
        budget = rec.budgets[protocol]
        if budget is None:
            with pytest.raises(AnalysisError, match=f"not run under protocol '{protocol}'"):
                rec.budget(protocol)
            continue
        core = rec.load_from_codes() if protocol == "mipet" else None
        for key in budget:
            if core is not None and key in ("num_train", "num_test", "batch_size"):
                continue  # the shared sample's size, drawn by the protocol
            target = _params(core) if core is not None else params
            assert key in target, f"{rec.name}: budgets[{protocol!r}] names {key!r}"
        if core is not None:
            assert {"num_train", "batch_size"} <= set(budget), rec.name


@pytest.mark.parametrize("rec", RECORDS, ids=[r.name for r in RECORDS])
def test_fast_budgets_are_at_most_dlibs(rec) -> None:
    params = _params(rec.load())
    dlib = {**{k: p.default for k, p in params.items()}, **rec.budgets["dlib"]}
    for key, value in rec.budgets["fast"].items():
        if key.startswith("num_") or key == "n_estimators":
            assert value <= dlib[key], f"{rec.name}: fast {key}={value} > dlib {dlib[key]}"


def test_keys_are_unique_and_every_direction_is_known() -> None:
    keys = [k for r in RECORDS for k in r.keys]
    assert len(keys) == len(set(keys))
    for rec in RECORDS:
        for key, way in rec.keys.items():
            assert direction(f"eval/{key}") == way == direction(f"fast/{key}")
            assert registry.direction_of(key) == way
    assert direction("eval/gaussian_total_correlation") == "min"
    assert direction("eval/udr_lasso") == "max"
    with pytest.raises(AnalysisError, match="direction is unknown"):
        direction("eval/not_a_metric")


def test_tables_are_derived_from_the_records() -> None:
    single = [r for r in RECORDS if not r.group]
    assert list(metrics.METRICS) == list(metrics.METRIC_KEYS) == [r.name for r in single]
    assert set(metrics.GROUP_METRIC_KEYS) == {"udr_lasso", "udr_spearman"}
    assert set(metrics.RESULT_KEYS) == {k for r in single for k in r.keys}
    for protocol, names in metrics.DEFAULT_METRICS.items():
        assert set(names) <= set(metrics.PROTOCOLS[protocol])
    assert set(metrics.PROTOCOLS["mipet"]) == {"factor_vae", "mig", "dci", "sap"}
    assert list(metrics.SCALE_INVARIANT) == ["mig", "dci", "modularity_explicitness"]
    assert "unsupervised" not in metrics.BOUNDED_0_1
    for rec in RECORDS:
        assert getattr(metrics, rec.name) is rec.load()  # every metric by its name
        assert rec.unsupervised is (not rec.needs_factors)
        assert rec.reference
    assert [r.name for r in RECORDS if r.unsupervised] == [
        "unsupervised", "udr_lasso", "udr_spearman"]


def test_group_metrics_are_refused_by_evaluate_and_single_ones_by_evaluate_group() -> None:
    data = SyntheticData((3, 4))
    with pytest.raises(AnalysisError, match="scores a group of at least 2 models"):
        metrics.evaluate(data, lambda o: o[:, 0, :, 0], metrics=["udr_lasso"])
    with pytest.raises(AnalysisError, match="scores one model"):
        metrics.evaluate_group(data, [], metric="mig")
    with pytest.raises(AnalysisError, match="needs at least 2 models"):
        metrics.evaluate_group(data, [lambda o: o], metric="udr_lasso")
    with pytest.raises(AnalysisError, match="not run under protocol 'mipet'"):
        metrics.evaluate_group(data, [lambda o: o] * 2, metric="udr_lasso", protocol="mipet")
    with pytest.raises(AnalysisError, match="paper's protocol has no 'irs'"):
        metrics.evaluate(data, lambda o: o[:, 0, :, 0], metrics=["irs"], protocol="mipet")


def test_the_registry_and_run_configs_import_no_scikit_learn_scipy_or_pandas() -> None:
    code = (
        "import sys\n"
        "import analysis.metrics.registry\n"
        "import analysis.metrics\n"
        "from tune.config.run import RunConfig\n"
        "RunConfig.from_dict({'eval': {'metrics': ['mig', 'unsupervised']}})\n"
        "print(' '.join(sorted({'sklearn', 'scipy', 'pandas'} & set(sys.modules))))"
    )
    assert _fresh(code) == ""


def test_analysis_loads_lazily_and_keeps_its_function_names() -> None:
    code = (
        "import sys, types\n"
        "import analysis\n"
        "assert 'pandas' not in sys.modules\n"
        "import analysis.plots, analysis.rank, analysis.importance\n"
        "from analysis import importance, rank, load_sweep\n"
        "assert all(isinstance(f, types.FunctionType) for f in (importance, rank, load_sweep))\n"
        "assert analysis.rank is rank\n"
    )
    _fresh(code)


def test_non_finite_codes_are_told_by_class_not_by_words() -> None:
    from analysis.metrics import NonFiniteCodesError, mig_from_codes

    codes = np.zeros((10, 2))
    codes[3, 1] = np.inf
    with pytest.raises(NonFiniteCodesError, match="non-finite values"):
        mig_from_codes(codes, np.zeros((10, 1), dtype=int))
    assert issubclass(NonFiniteCodesError, AnalysisError)
    # "inf" as a word, never as the start of "informativeness".
    assert not NONFINITE_WORDS.search("dci_informativeness_test is 0.3; information lost")
    assert NONFINITE_WORDS.search("loss is inf at step 3")
