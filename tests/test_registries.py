"""Nothing is derivable but not checkable, or the reverse: both engines have a rule for every spec class."""

import pytest

from varprop.derive import backward_rule, forward_rule, observable_rules
from varprop.derive.propagate import cross_rule
from varprop.montecarlo.estimators import network_values
from varprop.montecarlo.engines import conditional_step, layer_step
from varprop.network import LAYER_CLASSES
from varprop.observables import OBSERVABLES, Observable

ENGINES = {
    "derive forward": forward_rule,
    "derive backward": backward_rule,
    "derive cross moment": cross_rule,
    "Monte Carlo layer step (full matrices)": layer_step,
    "Monte Carlo layer step (conditional Gaussian)": conditional_step,
}


def _registered(registry_function, cls) -> bool:
    # singledispatch falls back to the `object` implementation, which raises: that is "no rule".
    return registry_function.dispatch(cls) is not registry_function.registry[object]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("cls", LAYER_CLASSES, ids=lambda c: c.__name__)
def test_every_layer_class_has_a_rule_in_each_engine(engine, cls):
    assert _registered(ENGINES[engine], cls), f"{engine} has no rule for {cls.__name__}"


@pytest.mark.parametrize("registry", [observable_rules, network_values], ids=["derive", "Monte Carlo"])
@pytest.mark.parametrize("cls", OBSERVABLES, ids=lambda c: c.__name__)
def test_every_observable_class_has_a_rule_in_each_engine(registry, cls):
    assert _registered(registry, cls)


def test_the_check_itself_catches_a_missing_rule():
    class Skewness(Observable):
        statistic = "skewness"

    class Pooling:
        pass

    assert not _registered(observable_rules, Skewness) and not _registered(network_values, Skewness)
    assert not any(_registered(f, Pooling) for f in ENGINES.values())
