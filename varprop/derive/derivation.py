r"""Derivations as data: ordered, sympy-checked steps with their rule, assumptions and source.

A :class:`Step` is an equation ``lhs = rhs`` (sympy), the :class:`Rule` that justifies it, the
assumptions it uses, the paper and equation it comes from, and how it was checked:

``definition``
    the left side is defined as the right side (the activation, the chain rule).
``identity``
    sympy simplified ``lhs - rhs`` to zero once the facts the step cites were substituted; the
    :class:`_Builder` refuses a step that fails this check.
``lemma``
    a pointwise identity of the activation (e.g. :math:`\mathrm{relu}(y)^2 + \mathrm{relu}(-y)^2 = y^2`)
    proved by sympy for :math:`y > 0` and :math:`y < 0`.
``integral``
    computed by the Gaussian expectation engine (its route is named in the justification).
``unrolled``
    a product formula checked against the recursion unrolled for several depths.
``solve``
    the solution of an equation found by ``sympy.solve``.
``modelling``
    a statement that follows from the stated assumptions (independence, identical distribution), not
    from algebra; it is shown as such, never passed off as checked.

A :class:`Derivation` renders through sympy's own printers to LaTeX (an ``align`` environment with
one tagged line per step), Markdown and plain text.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import sympy as sp
from sympy.printing.latex import LatexPrinter
from sympy.printing.str import StrPrinter

from ..errors import DerivationError

__all__ = [
    "Expect",
    "Variance",
    "Phi",
    "DPhi",
    "Rule",
    "Step",
    "Derivation",
    "to_text",
    "to_latex",
]


class _Bracket(sp.Function):
    """An unevaluated operator printed as ``NAME[arg]`` (text) and ``TEX\\left[arg\\right]`` (LaTeX)."""

    nargs = 1
    _text = ""
    _tex = ""

    def _latex(self, printer: LatexPrinter, exp: object = None) -> str:
        tex = r"%s\left[%s\right]" % (self._tex, printer._print(self.args[0]))
        return tex if exp is None else r"%s^{%s}" % (tex, exp)

    def _sympystr(self, printer: StrPrinter) -> str:
        return "%s[%s]" % (self._text, printer._print(self.args[0]))


class Expect(_Bracket):
    r"""The expectation :math:`E[\,\cdot\,]` of a random quantity, kept unevaluated."""

    _text, _tex = "E", r"\mathbb{E}"


class Variance(_Bracket):
    r"""The variance :math:`\operatorname{Var}[\,\cdot\,]` of a random quantity, kept unevaluated."""

    _text, _tex = "Var", r"\operatorname{Var}"


class _Applied(sp.Function):
    """A named function of a random quantity, printed ``name(arg)`` (text) and ``TEX\\left(arg\\right)``."""

    nargs = 1
    _text = ""
    _tex = ""

    def _latex(self, printer: LatexPrinter, exp: object = None) -> str:
        base = self._tex if exp is None else r"%s^{%s}" % (self._tex, exp)
        return r"%s\left(%s\right)" % (base, printer._print(self.args[0]))

    def _sympystr(self, printer: StrPrinter) -> str:
        return "%s(%s)" % (self._text, printer._print(self.args[0]))


class Phi(_Applied):
    r"""The activation :math:`\phi` applied to a random quantity (defined in the derivation)."""

    _text, _tex = "phi", r"\phi"


class DPhi(_Applied):
    r"""The derivative :math:`\phi'` applied to a random quantity."""

    _text, _tex = "phi'", r"\phi'"


class Rule(str, enum.Enum):
    """Why a step holds."""

    DEFINITION = "definition"
    INDEPENDENCE = "independence"
    IDENTICAL_DISTRIBUTION = "identical distribution"
    ZERO_MEAN = "zero-mean weights"
    VARIANCE_DEFINITION = "definition of variance"
    SYMMETRY = "symmetry"
    GAUSSIAN_INTEGRAL = "Gaussian integral"
    CHAIN_RULE = "chain rule"
    SUBSTITUTION = "substitution"
    ALGEBRA = "algebra"
    UNROLLING = "unrolling the recursion"
    CONDITION = "condition"
    SOLVE = "solve"
    TELESCOPING = "telescoping product"
    LINEAR_REGIME = "linear regime"
    FIXED_POINT = "fixed point"


_CHECKS = ("identity", "definition", "lemma", "integral", "unrolled", "solve", "modelling")


@dataclass(frozen=True)
class Step:
    """One line of a derivation: ``lhs = rhs`` with its justification."""

    lhs: sp.Expr
    rhs: sp.Expr
    rule: Rule
    justification: str
    check: str
    assumptions: tuple[str, ...] = ()
    source: str = ""

    @property
    def equation(self) -> sp.Eq:
        return sp.Eq(self.lhs, self.rhs, evaluate=False)

    @property
    def checked(self) -> bool:
        """True when sympy (or the expectation engine) established the step, not an assumption."""
        return self.check != "modelling"

    def reason(self) -> str:
        text = f"{self.rule.value}: {self.justification}" if self.justification else self.rule.value
        return f"{text} [{self.source}]" if self.source else text


@dataclass(frozen=True)
class Derivation:
    """An ordered list of checked steps and the result they establish."""

    title: str
    steps: tuple[Step, ...]
    result: sp.Expr
    summary: str = ""
    extras: Mapping[str, sp.Expr] = field(default_factory=dict)

    @property
    def assumptions(self) -> tuple[str, ...]:
        """Every assumption used by some step, in order of first use."""
        seen: dict[str, None] = {}
        for step in self.steps:
            for assumption in step.assumptions:
                seen.setdefault(assumption, None)
        return tuple(seen)

    def latex(self, *, standalone: bool = False) -> str:
        r"""The steps as an ``align`` environment, one ``\tag`` per step, then each step's justification.

        Each line carries its rule and the paper's equation number; the list below the environment
        gives the full justification and how the step was checked. ``standalone`` wraps it all in a
        document that ``pdflatex`` compiles.
        """
        lines = []
        previous_lhs = None
        for number, step in enumerate(self.steps, 1):
            lhs = "" if previous_lhs is not None and step.lhs == previous_lhs else to_latex(step.lhs)
            label = step.rule.value + (f"; {step.source}" if step.source else "")
            lines.append(f"{lhs} &= {to_latex(step.rhs)} && \\text{{{latex_text(label)}}} \\tag{{{number}}}")
            previous_lhs = step.lhs
        body = "\\begin{align}\n" + " \\\\\n".join(lines) + "\n\\end{align}\n"
        details = "".join(
            f"\\item[({number})] {latex_text(step.justification or step.rule.value)} (checked: {step.check})\n"
            for number, step in enumerate(self.steps, 1)
        )
        body += "\\begin{description}\\small\n" + details + "\\end{description}\n"
        header = f"% {self.title}\n"
        if not standalone:
            return header + body + _latex_assumptions(self.assumptions)
        return (
            "\\documentclass{article}\n\\usepackage[margin=1.5cm,landscape]{geometry}\n"
            "\\usepackage{amsmath,amssymb}\n\\allowdisplaybreaks\n\\begin{document}\n"
            f"\\section*{{{latex_text(self.title)}}}\n{latex_text(self.summary)}\n\n"
            + header
            + body
            + "\\paragraph{Result.} $"
            + to_latex(self.result)
            + "$\n"
            + _latex_assumptions(self.assumptions)
            + "\\end{document}\n"
        )

    def markdown(self) -> str:
        """A Markdown section: the summary, a numbered list of steps with LaTeX math, the result."""
        out = [f"### {self.title}", ""]
        if self.summary:
            out += [self.summary, ""]
        for number, step in enumerate(self.steps, 1):
            out.append(f"{number}. $${to_latex(step.lhs)} = {to_latex(step.rhs)}$$  ")
            out.append(f"   *{step.reason()}*; checked: {step.check}")
        out += ["", f"**Result:** ${to_latex(self.result)}$", ""]
        if self.assumptions:
            out.append("**Assumptions:** " + "; ".join(self.assumptions) + ".")
            out.append("")
        return "\n".join(out)

    def text(self) -> str:
        """Plain text, readable in a terminal: one numbered line per step and its justification."""
        out = [self.title, "=" * len(self.title)]
        if self.summary:
            out += [self.summary, ""]
        width = len(str(len(self.steps)))
        for number, step in enumerate(self.steps, 1):
            out.append(f"({number:>{width}}) {to_text(step.lhs)} = {to_text(step.rhs)}")
            out.append(f"{'':>{width + 3}}  {step.reason()}  [checked: {step.check}]")
        out += ["", f"Result: {to_text(self.result)}"]
        if self.assumptions:
            out.append("Assumptions:")
            out += [f"  - {a}" for a in self.assumptions]
        return "\n".join(out) + "\n"

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dictionary: sympy text (``srepr``-free ``str``) for every expression."""
        return {
            "title": self.title,
            "summary": self.summary,
            "steps": [
                {
                    "lhs": str(step.lhs),
                    "rhs": str(step.rhs),
                    "latex": f"{to_latex(step.lhs)} = {to_latex(step.rhs)}",
                    "rule": step.rule.value,
                    "justification": step.justification,
                    "source": step.source,
                    "assumptions": list(step.assumptions),
                    "check": step.check,
                }
                for step in self.steps
            ],
            "result": str(self.result),
            "result_latex": to_latex(self.result),
            "assumptions": list(self.assumptions),
            **{key: str(value) for key, value in self.extras.items()},
        }

    def json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


# --- printing -------------------------------------------------------------------------------


class _TextPrinter(StrPrinter):
    def _print(self, expr: object, **kwargs: object) -> str:
        if isinstance(expr, sp.Indexed):  # Indexed's own _sympystr would win otherwise
            return self._print_Indexed(expr)
        return super()._print(expr, **kwargs)

    def _print_Indexed(self, expr: sp.Indexed) -> str:
        index = self._print(expr.indices[0]) if len(expr.indices) == 1 else ",".join(map(self._print, expr.indices))
        if not (expr.indices[0].is_Symbol or expr.indices[0].is_Integer) or len(expr.indices) > 1:
            index = f"({index})"
        return f"{self._print(expr.base)}_{index}"

    def _print_Product(self, expr: sp.Product) -> str:
        (var, lo, hi), = expr.limits
        return f"prod_({self._print(var)}={self._print(lo)}..{self._print(hi)}) [{self._print(expr.function)}]"


class _LatexPrinter(LatexPrinter):
    def _print_Indexed(self, expr: sp.Indexed) -> str:
        name = str(expr.base.label)
        if name.startswith("Delta_"):  # gradient bases: Delta_x -> \Delta x (He et al.'s notation)
            base = r"\Delta " + name.removeprefix("Delta_")
        else:
            base = self._print(expr.base.label)
        if "_" in base or "^" in base:
            base = f"{{{base}}}"
        return f"{base}_{{{','.join(self._print(i) for i in expr.indices)}}}"


def to_text(expr: sp.Basic) -> str:
    """One-line plain text of ``expr`` (``y_l``, ``Var[y_(l-1)]``, ``E[x_l**2]``)."""
    return _TextPrinter().doprint(expr)


def to_latex(expr: sp.Basic) -> str:
    """LaTeX of ``expr`` through sympy's printer (``y_{l-1}``, ``\\operatorname{Var}[\\cdot]``)."""
    return _LatexPrinter().doprint(expr)


_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}", "±": r"$\pm$"}


def latex_text(text: str) -> str:
    """Plain words escaped for LaTeX text mode."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def _latex_assumptions(assumptions: Iterable[str]) -> str:
    items = list(assumptions)
    if not items:
        return ""
    return "\\paragraph{Assumptions.}\n\\begin{itemize}\n" + "".join(
        f"\\item {latex_text(a)}\n" for a in items
    ) + "\\end{itemize}\n"


# --- building with checks -------------------------------------------------------------------


def _is_zero(expr: sp.Expr) -> bool:
    if expr == 0:
        return True
    expanded = sp.expand(expr)
    if expanded == 0:
        return True
    return sp.simplify(expanded, doit=False) == 0  # doit would hand unevaluated integrals to integrate()


def _apply(expr: sp.Expr, facts: Mapping[sp.Expr, sp.Expr] | None) -> sp.Expr:
    """Substitute ``facts`` until nothing changes (a fact's right side may use another fact's left side)."""
    facts = dict(facts or {})
    for _ in range(len(facts) + 1):
        replaced = expr.subs(facts)
        if replaced == expr:
            break
        expr = replaced
    return expr


class _Builder:
    """Accumulates steps and refuses any algebraic step sympy cannot confirm."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.steps: list[Step] = []

    @property
    def current(self) -> Step:
        return self.steps[-1]

    def state(
        self,
        lhs: sp.Expr,
        rhs: sp.Expr,
        rule: Rule,
        justification: str = "",
        *,
        check: str = "modelling",
        assumptions: Iterable[str] = (),
        source: str = "",
    ) -> Step:
        """Record a step that holds by the named check (``modelling``, ``integral``, ``lemma``, ...)."""
        if check not in _CHECKS:
            raise DerivationError(f"unknown check {check!r}; known: {', '.join(_CHECKS)}")
        step = Step(lhs, rhs, rule, justification, check, tuple(assumptions), source)
        self.steps.append(step)
        return step

    def identity(
        self,
        lhs: sp.Expr,
        rhs: sp.Expr,
        rule: Rule,
        justification: str = "",
        *,
        facts: Mapping[sp.Expr, sp.Expr] | None = None,
        assumptions: Iterable[str] = (),
        source: str = "",
    ) -> Step:
        """Record ``lhs = rhs`` after checking that ``lhs - rhs`` vanishes once ``facts`` are substituted."""
        difference = _apply(lhs - rhs, facts)
        if not _is_zero(difference):
            raise DerivationError(f"step '{justification or rule.value}' does not hold: {lhs} - ({rhs}) = {difference}")
        return self.state(lhs, rhs, rule, justification, check="identity", assumptions=assumptions, source=source)

    def then(
        self,
        rhs: sp.Expr,
        rule: Rule,
        justification: str = "",
        *,
        facts: Mapping[sp.Expr, sp.Expr] | None = None,
        assumptions: Iterable[str] = (),
        source: str = "",
    ) -> Step:
        """Continue the current chain: ``lhs = rhs`` where ``rhs`` equals the previous right side given ``facts``."""
        previous = self.current
        difference = _apply(previous.rhs - rhs, facts)
        if not _is_zero(difference):
            raise DerivationError(
                f"step '{justification or rule.value}' does not follow: {previous.rhs} with {facts} is not {rhs}"
            )
        return self.state(previous.lhs, rhs, rule, justification, check="identity", assumptions=assumptions, source=source)

    def build(self, result: sp.Expr, summary: str = "", **extras: sp.Expr) -> Derivation:
        return Derivation(self.title, tuple(self.steps), result, summary, dict(extras))
