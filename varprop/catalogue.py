r"""The catalogue of named claims, each built from :func:`varprop.derive.derive` (never retyped).

Every entry is a :class:`~varprop.claims.ClaimFamily`: a network family indexed by its hidden width
n, one observable at one layer, and the derivation :func:`varprop.derive.derive` returns for that
network; the claim's prediction is the derivation's result and its exactness the derivation's. The
mutation suite in the tests feeds deliberately wrong formulas through the same checker.

:data:`CATALOGUE` is built on first use, not at import.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import sympy as sp

from ._forked import map_forked
from .activations import activation
from .claims import Claim, ClaimError, ClaimFamily, derive_families
from .derive.gaussian import evaluate
from .derive.propagate import derive
from .network import (BatchNorm, Dense, Dropout, FixedInput, LayerNorm, Network, Nonlinearity, Residual, RMSNorm, cnn, conv,
                      mlp)
from .observables import Correlation, Gradient, Mean, Observable, ObservableError, SecondMoment, Signal, from_name
from .weights import glorot, he, lecun, torch_linear_default

__all__ = ["CATALOGUE", "claim_from_derivation", "family", "law_claims"]

HE = "He et al. 2015"
GLOROT = "Glorot & Bengio 2010"
CHO_SAUL = "Cho & Saul 2009 (arc-cosine kernel)"
SCHOENHOLZ = "Schoenholz et al. 2017"
BA = "Ba et al. 2016, eq. (4)"
ZHANG = "Zhang & Sennrich 2019, eq. (4)"
IOFFE = "Ioffe & Szegedy 2015, Algorithm 1"
_DEPTH = 3
_SMALL = (2, 4)  # an exact claim must hold at narrow widths too
# Widths an asymptotic claim's limit is fitted over: from 8 up, where the 2^-n of a dead relu layer
# (6 % at n = 4, 0.4 % at n = 8) no longer dominates the 1/n terms the fit models.
_SWEEP = (8, 16, 32)
# The unequal-width networks (hidden widths n and 2n, 5 n^2 weights) show no measurable dead-layer
# shortfall at n = 4 and cost 5 times more per network: their limit is resolved from 4, 8, 16.
_SWEEP_UNEQUAL = (4, 8, 16)


def claim_from_derivation(
    name: str,
    network: Network,
    observable: str | Observable,
    layer: int | None = None,
    *,
    source: str = "",
    description: str = "",
    finite_width: bool = False,
    linear_regime: bool = False,
) -> Claim:
    """A claim whose prediction and exactness class come from :func:`varprop.derive.derive`.

    ``observable`` is an :class:`~varprop.observables.Observable` or a claim-file name with its
    dense ``layer``.
    """
    if isinstance(observable, str):
        if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer <= network.depth:
            raise ClaimError(f"claim {name!r}: layer must be from 1 to {network.depth}, got {layer!r}")
        try:
            observable = from_name(observable, layer, network)
        except ObservableError as exc:
            raise ClaimError(f"claim {name!r}: {exc}") from None
    derivation = derive(network, observable, finite_width=finite_width, linear_regime=linear_regime)
    number = evaluate(derivation.result)
    return Claim(name, network, observable, None, None, None, number.value, number.error_estimate, (), source,
                 description, derivation)


def _widths(n: int, depth: int = _DEPTH, pattern: Sequence[int] = (1,)) -> list[int]:
    """Input width n, then hidden widths n * pattern (cycled), output width n."""
    hidden = [n * pattern[i % len(pattern)] for i in range(depth - 1)]
    return [n, *hidden, n]


def _entry(
    name: str,
    description: str,
    network_at: Callable[[int], Network],
    observable: str | Observable,
    layer: int | Callable[[Network], int] | None,
    *,
    source: str,
    width: int = 8,
    sweep: Sequence[int] | None = None,
    finite_width: bool = False,
) -> _Entry:
    def build(n: int) -> Claim:
        network = network_at(n)
        at = layer(network) if callable(layer) else layer
        return claim_from_derivation(name, network, observable, at, source=source, description=description,
                                     finite_width=finite_width)

    return _Entry(name, description, build, width, None if sweep is None else tuple(sweep), network_at)


@dataclass(frozen=True)
class _Entry:
    """A catalogue entry before its first derivation, which says what kind of claim it is (hence its sweep)."""

    name: str
    description: str
    build: Callable[[int], Claim]
    width: int
    sweep: tuple[int, ...] | None  # None: the default for the kind of claim
    network_at: Callable[[int], Network]  # the network build(n) derives for

    def family(self, claims: Mapping[int, Claim]) -> ClaimFamily:
        """The family, given its claims at some widths (at least ``width``, whose kind sets the sweep)."""
        kind = claims[self.width].exactness
        sweep = self.sweep
        if sweep is None:
            sweep = _SWEEP if kind in ("asymptotic", "approximation") else _SMALL
        width = max(self.width, *sweep) if kind == "asymptotic" else self.width  # an asymptotic claim's own
        # width is the largest of its sweep
        family = ClaimFamily(self.name, self.description, self.build, width, tuple(sweep))
        for n, claim in claims.items():
            family.knowing(n, claim)
        return family

    def claims(self, sweeps: bool) -> dict[int, Claim]:
        """The claims at ``width`` and, with ``sweeps``, at the family's own width and every width of its sweep."""
        family = self.family({self.width: self.build(self.width)})
        widths = (self.width, family.width, *family.sweep) if sweeps else (self.width,)
        return family.at_widths(widths)


def _families(entries: list[_Entry | ClaimFamily], sweeps: bool) -> list[ClaimFamily]:
    """The entries as families, derived in forked processes; ``sweeps``: the claims at every width of the sweeps too.

    The entries about the same network are derived in one process, and so are all the widths of an entry:
    there they share the derivations that sympy's and varprop's caches keep (split over processes, the
    sweeps alone took 2.6 s instead of 1.6 s).
    """
    groups: dict[object, list[_Entry | ClaimFamily]] = {}
    for entry in entries:
        groups.setdefault(entry.network_at(entry.width) if isinstance(entry, _Entry) else entry.name, []).append(entry)
    derived = map_forked([partial(_group_claims, group, sweeps) for group in groups.values()])
    claims = {entry: known for group, results in zip(groups.values(), derived) for entry, known in zip(group, results)}
    families = []
    for entry in entries:
        if isinstance(entry, _Entry):
            families.append(entry.family(claims[entry]))
        else:
            for n, claim in claims[entry].items():
                entry.knowing(n, claim)
            families.append(entry)
    return families


def _group_claims(group: list[_Entry | ClaimFamily], sweeps: bool) -> list[dict[int, Claim]]:
    """Each entry's claims: at its first width, and with ``sweeps`` at every width of its family's sweep."""
    return [entry.claims(sweeps) if isinstance(entry, _Entry) else
            entry.at_widths((entry.width, *entry.sweep)) if sweeps else {} for entry in group]


def _last(network: Network) -> int:
    return network.depth


def _catalogue(sweeps: bool = False) -> dict[str, ClaimFamily]:
    relu = activation("relu")
    leaky = activation("leaky_relu", a=sp.Rational(1, 5))
    entries = [
        _entry("he-forward-relu-normal",
               "E[y_L^2] stays at 2 Var[x] through a relu net with He (fan-in) normal weights",
               lambda n: mlp(_widths(n), relu, he()), "y_second_moment", _last,
               source=f"{HE}, eqs. (8)-(10)"),
        _entry("he-forward-relu-uniform",
               "the same with He uniform weights: the 1/2 needs only symmetric weights",
               lambda n: mlp(_widths(n), relu, he(distribution="uniform")), "y_second_moment", _last,
               source=f"{HE}, eqs. (8)-(10)"),
        _entry("he-forward-leaky-relu-normal",
               "leaky relu (a = 0.2) with Var[w] = 2/((1 + a^2) n): E[y_L^2] stays at 2 Var[x]",
               lambda n: mlp(_widths(n), leaky, he(a=sp.Rational(1, 5))), "y_second_moment", _last,
               source=f"{HE}, eq. (15)"),
        _entry("he-forward-leaky-relu-uniform",
               "leaky relu (a = 0.2), uniform weights",
               lambda n: mlp(_widths(n), leaky, he(a=sp.Rational(1, 5), distribution="uniform")),
               "y_second_moment", _last, source=f"{HE}, eq. (15)"),
        _entry("he-backward-fan-in-equal",
               "E[(dL/dx_{L-1})^2] with He fan-in init and equal widths: He's backward recursion; at narrow "
               "widths a relu layer that is all zero (probability 2^-n) passes no gradient",
               lambda n: mlp(_widths(n), relu, he()), "dx_second_moment", lambda net: net.depth - 1,
               source=f"{HE}, eqs. (11)-(13)", width=16),
        _entry("he-backward-fan-out-unequal",
               "E[(dL/dx_1)^2] with He fan-out init and unequal widths: constant across layers",
               lambda n: mlp(_widths(n, pattern=(1, 2, 3, 4)), relu, he("fan_out")), "dx_second_moment", 1,
               source=f"{HE}, eq. (14)", width=16, sweep=_SWEEP_UNEQUAL),
        _entry("he-backward-fan-in-unequal",
               "E[(dL/dx_1)^2] with He fan-in init and unequal widths: the width ratio c_2/d_L appears",
               lambda n: mlp(_widths(n, pattern=(1, 2, 3, 4)), relu, he()), "dx_second_moment", 1,
               source=f"{HE}, after eq. (14)", width=16, sweep=_SWEEP_UNEQUAL),
        _entry("he-backward-last-layers-finite-width",
               "E[(dL/dy_{L-1})^2] at narrow width: He's 1/2 times P(no relu layer below is all zero)",
               lambda n: mlp(_widths(n), relu, he()), "dy_second_moment", lambda net: net.depth - 1,
               source=f"{HE}, eq. (12), with the exact finite-width factor prod(1 - 2^-n_k)",
               width=4, finite_width=True),
        _entry("weight-gradient-last-layer",
               "E[(dL/dW_L)^2] = E[(dL/dy_L)^2] E[x_L^2] (exact: g is independent of x_L)",
               lambda n: mlp(_widths(n), relu, he()), "dw_second_moment", _last,
               source=f"{HE}, Sec. 2.2"),
        _entry("weight-gradient-relu",
               "E[(dL/dW_2)^2] = E[(dL/dy_2)^2] E[x_2^2]: both controlled by the He conditions",
               lambda n: mlp(_widths(n), relu, he()), "dw_second_moment", 2,
               source=f"{HE}, Sec. 2.2", width=16),
        _entry("glorot-linear-forward",
               "linear net, Glorot init, unequal widths: E[y_L^2] from the product of n_l Var[w_l]",
               lambda n: mlp(_widths(n, pattern=(1, 2, 3, 4)), "linear", glorot()), "y_second_moment", _last,
               source=f"{GLOROT}, eq. (5)"),
        _entry("glorot-linear-backward",
               "linear net, Glorot init, unequal widths: E[(dL/dx_1)^2] from the product of nhat_l Var[w_l]",
               lambda n: mlp(_widths(n, pattern=(1, 2, 3, 4)), "linear", glorot()), "dx_second_moment", 1,
               source=f"{GLOROT}, eq. (6)"),
        _entry("relu-mean-fixed-input",
               "E[x_2] = sqrt(Var[y_1]/(2 pi)): relu outputs are not zero-mean (y_1 exactly Gaussian)",
               lambda n: mlp(_widths(n), relu, he(), inputs=_fixed(n)), "x_mean", 2,
               source=f"{HE}, Sec. 2.2 (remark after eq. 7)"),
        _entry("relu-mean-uniform",
               "E[x_2] = sqrt(Var[y_1]/(2 pi)) with uniform weights: only as the width grows",
               lambda n: mlp(_widths(n), relu, he(distribution="uniform"), inputs=_fixed(n)), "x_mean", 2,
               source=f"{HE}, Sec. 2.2", width=16),
        _entry("shifted-relu-second-moment",
               "relu(y) - 1/2: E[x_2^2] = q/2 - sqrt(q/(2 pi)) + 1/4, no scale-free condition",
               lambda n: mlp(_widths(n), activation("shifted_relu"), he(), inputs=_fixed(n)),
               "x_second_moment", 2, source="varprop (shifted relu fixed point)"),
        _entry("pytorch-default-relu",
               "PyTorch nn.Linear default (kaiming_uniform a=sqrt 5, Var = 1/(3n)), relu, no bias: "
               "E[y_l^2] shrinks by 1/6 per layer",
               lambda n: mlp(_widths(n, depth=4), relu, torch_linear_default(bias=False)), "y_second_moment",
               _last, source="PyTorch nn.Linear.reset_parameters", width=16, sweep=(8,)),
        _glorot_tanh(),
        *_correlation_entries(),
        *_residual_entries(),
        *_dropout_entries(),
        *_convolution_entries(),
        *_normaliser_entries(),
        *_batchnorm_entries(),
    ]
    return {entry.name: entry for entry in _families(entries, sweeps)}


def _correlation_entries() -> list[_Entry]:
    """Correlations of a pair of fixed inputs through the same network (Poole et al. 2016; Schoenholz et al. 2017).

    Place ``act{k}`` is position ``2k - 1`` of an MLP (dense1, act1, dense2, act2, ...).
    """
    relu, shifted, tanh = activation("relu"), activation("shifted_relu"), activation("tanh")
    half = sp.Rational(1, 2)
    return [
        _entry("relu-correlation-orthogonal",
               "two orthogonal fixed inputs after one relu layer under He: correlation E[relu]^2 / E[relu^2] = 1/pi "
               "(the mean of relu is shared by both)",
               lambda n: mlp(_widths(n, depth=2), relu, he(), inputs=FixedInput.pair(n, 0)), Correlation(Signal(1)),
               None, source=f"{CHO_SAUL}; {SCHOENHOLZ}, eq. (5)", width=16),
        # Widths 16-64: below them an O(1/n^2) term of the other sign makes the deviation shrink slower than
        # 1/n between the sweep's ends (n |d(n)| = 106, 111, 112 % at n = 8, 16, 32).
        _entry("relu-correlation-depth",
               "two orthogonal fixed inputs after three relu layers under He: the c-map of relu iterated from 0 "
               "(the correlation drifts towards 1)",
               lambda n: mlp(_widths(n, depth=4), relu, he(), inputs=FixedInput.pair(n, 0)), Correlation(Signal(5)),
               None, source=f"{CHO_SAUL}; {SCHOENHOLZ}, eq. (5)", width=64, sweep=(16, 32, 64)),
        _entry("shifted-relu-correlation",
               "relu - 1/2 under He, a fixed pair with correlation 1/2: the correlation after one layer, from the "
               "bivariate kernel of the shifted relu",
               lambda n: mlp(_widths(n, depth=2), shifted, he(), inputs=FixedInput.pair(n, half)),
               Correlation(Signal(1)), None, source=f"{SCHOENHOLZ}, eq. (5)", width=16),
        _entry("tanh-correlation",
               "tanh under LeCun (Var[w] = 1/n), a fixed pair with correlation 1/2: the correlation after one layer "
               "(bivariate kernel by quadrature)",
               lambda n: mlp(_widths(n, depth=2), tanh, lecun(), inputs=FixedInput.pair(n, half)),
               Correlation(Signal(1)), None, source=f"{SCHOENHOLZ}, eq. (5)", width=16),
    ]


#: Residual blocks in the catalogue's residual networks (each Dense, relu, Dense under He).
RESIDUAL_BLOCKS = 4


def residual_network(n: int, blocks: int, alpha: object, inputs: FixedInput | None = None,
                     activation_: str = "relu") -> Network:
    """Dense(n, n), then ``blocks`` residual blocks x + alpha f(x), f = Dense, relu, Dense, every weight He normal.

    The branch's gain is :math:`E[f^2]/E[x^2] = 2` (He's pair Dense, relu keeps :math:`E[y^2]` and the
    first dense layer doubles :math:`E[x^2]`), so block l multiplies the second moment by
    :math:`1 + 2\alpha^2`.
    """
    act = activation(activation_)
    law = he().law(n, n)
    block = Residual((Dense(n, n, law), Nonlinearity(act), Dense(n, n, law)), alpha)
    layers = (Dense(n, n, law),) + (block,) * blocks
    return Network(layers, inputs) if inputs is not None else Network(layers)


def _residual_entries() -> list[_Entry]:
    """Residual blocks (He et al. 2016): the forward recursion v_{l+1} = v_l (1 + 2 alpha^2), and the backward one."""
    blocks = RESIDUAL_BLOCKS
    scaled = 1 / sp.sqrt(blocks)
    return [
        _entry("residual-forward-scaled",
               f"{blocks} residual blocks x + f(x)/sqrt(L), f = Dense, relu, Dense under He: E[x^2] grows by "
               "(1 + 2/L)^L (towards e^2, not 3^L): exact at every width",
               lambda n: residual_network(n, blocks, scaled), SecondMoment(Signal(blocks)), None,
               source="He et al. 2016; Hanin & Rolnick 2018, Sec. 3", width=8, sweep=(4,)),
        _entry("residual-forward-unscaled",
               f"the same {blocks} blocks with alpha = 1: every block multiplies E[x^2] by 3",
               lambda n: residual_network(n, blocks, 1), SecondMoment(Signal(blocks)), None,
               source="He et al. 2016; Hanin & Rolnick 2018, Sec. 3", width=32, sweep=(8,)),  # the spread of 3^L: a wide net needs fewer networks
        _entry("residual-backward-last-block",
               "the gradient at the input of the last block: E[(dL/dx)^2] (1 + 2 alpha^2), exact (the loss "
               "direction is independent of the branch, so the cross term vanishes)",
               lambda n: residual_network(n, blocks, scaled), SecondMoment(Gradient(blocks - 1)), None,
               source="He et al. 2016", width=8, sweep=(4,)),
    ]


def _dropout_entries() -> list[_Entry]:
    """Inverted dropout at initialisation (keep probability p): E[y^2] = E[x^2]/p, forward and backward."""
    keep = sp.Rational(4, 5)
    relu = activation("relu")

    def network(n: int, inputs: FixedInput | None = None) -> Network:
        layers = (Dense(n, n, he().law(n, n)), Nonlinearity(relu), Dropout(keep), Dense(n, n, he().law(n, n)))
        return Network(layers, inputs) if inputs is not None else Network(layers)

    return [
        _entry("dropout-forward",
               "Dense, relu, Dropout(keep = 0.8), Dense under He: E[y_2^2] = 2/0.8, the 1/p of inverted dropout",
               network, "y_second_moment", 2, source="Srivastava et al. 2014; PyTorch nn.Dropout", width=8,
               sweep=(4,)),
        _entry("dropout-backward",
               "the same network: the gradient before the dropout layer, E[(dL/dx)^2] = nhat Var[w] / p, "
               "the same mask forward and backward",
               network, SecondMoment(Gradient(1)), None, source="Srivastava et al. 2014", width=8, sweep=(4,)),
        _entry("dropout-correlation",
               "two fixed inputs with correlation 1/2, each with its own mask: dropout keeps the cross "
               "moment and divides the second moments by p, so the correlation after it is p times the one before",
               lambda n: network(n, FixedInput.pair(n, sp.Rational(1, 2))), Correlation(Signal(2)), None,
               source="Srivastava et al. 2014", width=16, sweep=(8,)),
    ]


def _convolution_entries() -> list[_Entry]:
    """Convolutions (:mod:`varprop.derive.convolution`), indexed by their channel count n.

    Every observable covers all units of the layer, border positions included; small spatial sizes
    keep the border's share (and its effect) large and the networks cheap.
    """
    relu = activation("relu")
    return [
        _entry("he-conv1d-relu-interior",
               "He fan-in (n = C_in K) through a 1-D conv relu net without padding: every position is interior and "
               "E[h^2] stays at 2 Var[x], as for a dense net",
               lambda n: cnn([n, n, n], 3, 8, relu, he()), SecondMoment(Signal(2)), None,
               source=f"{HE}, eq. (10), with PyTorch's convolution fan-in"),
        _entry("conv1d-padded-border",
               "the same with zero padding 1 on 6 positions: the border positions see 2 of the 3 taps, and the layer "
               "average falls below He's 2 by the exact per-position recursion",
               lambda n: cnn([n, n, n], 3, 6, relu, he(), padding=1), SecondMoment(Signal(2)), None,
               source=f"{HE}, eq. (7), per position"),
        _entry("conv2d-strided-backward",
               "He fan-out (n-hat = C_out K) on a stride-2 3x3 2-D conv: input positions are reached by 1, 2 or 4 of "
               "the 9 taps, so E[(dL/dx)^2] is about 2/s^2 (less at the padded border), not the 2 fan-out mode promises",
               lambda n: Network((conv(n, n, 3, (6, 6), he("fan_out"), stride=2, padding=1),)),
               SecondMoment(Gradient(-1)), None, source=f"{HE}, eq. (14), per position"),
    ]


def _normaliser_entries() -> list[_Entry]:
    """LayerNorm and RMSNorm (PyTorch's layers at initialisation): exact where the normalisation makes it exact.

    Place ``rmsnorm1``/``layernorm1`` is position 1 of ``dense, norm, relu, dense`` and position 0 of
    ``norm, dense`` (a normaliser on the Gaussian input, whose mean square is a scaled chi-square).
    """
    relu = activation("relu")

    def normed(norm: type, n: int) -> Network:
        law = he().law(n, n)
        return Network((Dense(n, n, law), norm(n, eps=0), Nonlinearity(relu), Dense(n, n, law)))

    def on_input(norm: LayerNorm | RMSNorm) -> Network:
        return Network((norm, Dense(norm.width, norm.width, he().law(norm.width, norm.width))))

    return [
        _entry("rmsnorm-unit-mean-square",
               "RMSNorm with eps = 0 after a dense layer: the mean square over the units is 1 for every network "
               "(zero variance across networks)",
               lambda n: normed(RMSNorm, n), SecondMoment(Signal(1)), None, source=ZHANG),
        _entry("layernorm-unit-variance",
               "LayerNorm with eps = 0 after a dense layer: the mean square over the units is 1 for every network",
               lambda n: normed(LayerNorm, n), SecondMoment(Signal(1)), None, source=BA),
        _entry("layernorm-zero-mean",
               "LayerNorm: the mean over the units is 0 for every network, whatever eps",
               lambda n: normed(LayerNorm, n), Mean(Signal(1)), None, source=BA),
        _entry("rmsnorm-eps-gaussian-input",
               "RMSNorm with eps = 1 on a Gaussian input: E[y^2] = E[X/(X + n)], X chi-square with n degrees of "
               "freedom (incomplete gamma function), not the mean-field 1/2",
               lambda n: on_input(RMSNorm(n, eps=1)), SecondMoment(Signal(0)), None,
               source=f"{ZHANG}; Gradshteyn & Ryzhik 3.383.10"),
        _entry("layernorm-backward-gaussian-input",
               "LayerNorm with eps = 1/2 on a Gaussian input: the gradient's second moment through the Jacobian "
               "(I - 11^T/n - yy^T/n)/sigma, a chi-square expectation with n - 1 degrees of freedom",
               lambda n: on_input(LayerNorm(n, eps=sp.Rational(1, 2))), SecondMoment(Gradient(-1)), None,
               source=f"{BA}; Gradshteyn & Ryzhik 3.383.10"),
    ]


def _batchnorm_entries() -> list[_Entry]:
    """BatchNorm in training mode over a batch of 8 (4 on the input): exact where the normalisation makes it exact.

    ``batchnorm1`` is position 3 of ``dense, relu, dense, batchnorm``; on the Gaussian input
    the batch of a unit is iid Gaussian and its batch variance a scaled chi-square with B - 1 degrees of
    freedom; after a first dense layer on the Gaussian input it is a product of two independent ones.
    """
    relu = activation("relu")

    def deep(n: int) -> Network:
        law = he().law(n, n)
        return Network((Dense(n, n, law), Nonlinearity(relu), Dense(n, n, law), BatchNorm(n, 8, eps=0)))

    return [
        _entry("batchnorm-unit-mean-square",
               "BatchNorm with eps = 0 in a relu net: the batch mean square of every unit is 1, so E[y^2] = 1 for each "
               "example (exchangeable examples), whatever comes before",
               deep, SecondMoment(Signal(3)), None, source=IOFFE),
        _entry("batchnorm-eps-gaussian-input",
               "BatchNorm with eps = 1/2 over a batch of 4 Gaussian inputs: E[y^2] = E[X/(X + 2)], X chi-square with 3 "
               "degrees of freedom (incomplete gamma function), not v/(v + eps) = 2/3",
               lambda n: Network((BatchNorm(n, 4, eps=sp.Rational(1, 2)), Dense(n, n, he().law(n, n)))),
               SecondMoment(Signal(0)), None, source=f"{IOFFE}; Gradshteyn & Ryzhik 3.383.10"),
        _entry("batchnorm-backward-first-dense",
               "BatchNorm with eps = 0 over a batch of 8 after a He dense layer on the Gaussian input: the gradient at "
               "its input is (B-2)/(B-3) n/(2(n-2)) at every width, the mean-field value times n/(n-2)",
               lambda n: Network((Dense(n, n, he().law(n, n)), BatchNorm(n, 8, eps=0))), SecondMoment(Gradient(0)),
               None, source=IOFFE, width=16, sweep=(4, 8)),
    ]


def _fixed(n: int) -> FixedInput:
    """A fixed unit-mean-square input, so y_1 is exactly Gaussian under Gaussian weights."""
    return FixedInput(tuple(1.0 if j % 2 == 0 else -1.0 for j in range(n)))


def _glorot_tanh() -> ClaimFamily:
    """Glorot's linear regime for tanh: the derivation with phi(z) ~ z (an approximation) for the tanh network."""
    name = "glorot-tanh-linear-regime"
    description = ("tanh net with Glorot init judged by the linear-regime prediction E[y_L^2] = Var[x] prod n_l Var[w_l]: "
                   "expected to be off, the check measures by how much")

    def build(n: int) -> Claim:
        network = mlp(_widths(n, pattern=(1, 2, 3, 4)), "tanh", glorot())
        return claim_from_derivation(name, network, "y_second_moment", _DEPTH, source=f"{GLOROT}, eqs. (5), (12)",
                                     description=description, linear_regime=True)

    return ClaimFamily(name, description, build, 16, _SWEEP)


class _Catalogue(Mapping[str, ClaimFamily]):
    """The named claims, built (each derived) on first use rather than at import."""

    def __init__(self, build: Callable[[bool], dict[str, ClaimFamily]]) -> None:
        self._build = build
        self._entries: dict[str, ClaimFamily] | None = None

    def _loaded(self) -> dict[str, ClaimFamily]:
        if self._entries is None:
            self._entries = self._build(False)
        return self._entries

    def with_sweeps(self) -> list[ClaimFamily]:
        """Every family, derived at its own width and at every width of its sweep (what checking them all needs).

        Loading them so is faster than deriving the sweeps later: an entry's widths are derived in one process,
        where they share the caches of its first derivation (see :func:`varprop._forked.map_forked`).
        """
        if self._entries is None:
            self._entries = self._build(True)
        else:
            derive_families((f, n) for f in self._entries.values() for n in (f.width, *f.sweep))
        return list(self._entries.values())

    def __getitem__(self, name: str) -> ClaimFamily:
        return self._loaded()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())


#: The named claim families, by name (built on first use).
CATALOGUE: _Catalogue = _Catalogue(_catalogue)


def family(name: str) -> ClaimFamily:
    """The catalogue entry ``name``; a :class:`~varprop.claims.ClaimError` names the known ones."""
    try:
        return CATALOGUE[name]
    except KeyError:
        raise ClaimError(f"unknown claim {_short(name)}; known: {', '.join(CATALOGUE)}") from None


def _short(name: object) -> str:
    text = repr(name)
    return text if len(text) <= 60 else text[:57] + "..."


def law_claims() -> tuple[object, ...]:
    r"""The catalogue's law claims (:class:`~varprop.montecarlo.laws.LawClaim`): the exact finite-width law of
    :math:`M_L` (Hanin & Rolnick 2018, Sec. 5) for one relu layer at width 4 (a binomial mixture of
    chi-squares) and for two layers at width 4 (a product of two independent such factors), He's normal
    weights. ``varprop check --all`` judges them in one Holm family with :data:`CATALOGUE`'s claims."""
    from .montecarlo.laws import LawClaim

    return (LawClaim("law-one-layer-width-4", (4, 4)),
            LawClaim("law-two-layers-width-4", (4, 4, 4)))
