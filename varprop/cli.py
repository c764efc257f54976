"""The ``varprop`` command line: a thin layer over the Python API.

Every command parses its arguments, calls one public function and prints the result. Bad input
(a :class:`~varprop.errors.VarpropError`) is reported on one line with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence

import sympy as sp

from . import __version__
from ._files import output_directory
from .activations import BUILTIN_ACTIVATIONS, Activation, activation, builtin_summary, expression, parse_expression
from .derive import DERIVATIONS, Q, moments
from .errors import IntegrabilityError, VarpropError, abbreviate
from .montecarlo.limits import check_seed
from .progress import progress_bar
from .weights import DISTRIBUTIONS

__all__ = ["main", "build_parser"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FORMATS = ("text", "markdown", "latex", "json")


class _UsageError(VarpropError):
    """A command-line value that cannot be used."""


def _parse_number(text: str, what: str) -> sp.Expr:
    """A number written as text (``0.2``, ``1/3``, ``sqrt(5)``) through the whitelist parser."""
    value = parse_expression(text)
    if value.free_symbols:
        raise _UsageError(f"{what} must be a number (such as 0.2, 1/3 or sqrt(5)), got {text!r}")
    return value


def _parse_params(items: Sequence[str]) -> dict[str, sp.Expr | None]:
    params: dict[str, sp.Expr | None] = {}
    for item in items:
        name, has_value, value = item.partition("=")
        name = name.strip()
        if not _NAME.match(name):
            raise _UsageError(f"--param expects NAME or NAME=VALUE, got {item!r}")
        params[name] = _parse_number(value, f"parameter {name}") if has_value else None
    return params


def _activation(spec: str, params: dict[str, sp.Expr | None]) -> Activation:
    """A built-in by name, or a user expression in x."""
    if spec in BUILTIN_ACTIVATIONS:
        return activation(spec, **params)
    if _NAME.match(spec) and spec != "x":
        return activation(spec, **params)  # raises: unknown activation, with the list of known ones
    return expression(spec, **params)


# --- moments -------------------------------------------------------------------------------------


_MOMENT_LABELS = {
    "mean": "E[phi(z)]",
    "second_moment": "E[phi(z)^2]",
    "variance": "Var[phi(z)]",
    "derivative_second_moment": "E[phi'(z)^2]",
}


def moments_report(act: Activation, q: sp.Expr) -> dict[str, object]:
    """The moments of ``act`` under N(0, q) as a JSON-ready dictionary (see ``varprop moments --help``).

    An activation that is not square-integrable (E[phi^2] diverges) raises IntegrabilityError. Another
    moment that does not exist (E[phi'^2] of abs(x)**0.5) has ``null`` value, expression and route ``does-not-exist``, and its
    reason under ``does_not_exist``. ``error_estimate`` is the largest numeric error estimate (0 for
    closed forms); ``error_bound`` is a deprecated alias with the same value (it never was a bound).
    """
    result = moments(act)
    if not result.second_moment.exists:  # nothing propagates: refuse as bad input
        raise IntegrabilityError(
            f"{act} is not square-integrable under a Gaussian: E[phi(z)^2] does not exist: {result.second_moment.reason}"
        )
    report: dict[str, object] = {"activation": str(act), "q": float(q)}
    estimates = []
    missing: dict[str, str] = {}
    symbolic = act.expr.free_symbols - {sp.Symbol("x", real=True)}
    for key, value in result.as_dict().items():
        if not value.exists:
            report[f"{key}_expr"] = None
            report[f"{key}_route"] = value.route
            report[key] = None
            missing[key] = value.reason
            continue
        report[f"{key}_expr"] = str(value.expr)
        report[f"{key}_route"] = value.route
        if symbolic:
            report[key] = None
            continue
        number = value.evaluate({Q: q})
        report[key] = number.value
        estimates.append(number.error_estimate)
    report["exact"] = result.exact
    estimate = max(estimates) if estimates else (0.0 if report["exact"] else None)
    report["error_estimate"] = estimate
    report["error_bound"] = estimate  # deprecated alias of error_estimate
    notes = []
    if missing:
        report["does_not_exist"] = missing
        notes.extend(f"{_MOMENT_LABELS[k]} does not exist: {reason}" for k, reason in missing.items() if k != "variance")
    if symbolic:
        notes.append("numbers need values for " + ", ".join(sorted(map(str, symbolic))))
    if notes:
        report["note"] = "\n".join(notes)
    return report


def _print_moments(report: dict[str, object]) -> None:
    q = f"{report['q']:g}"
    print(f"{report['activation']}: moments under z ~ N(0, q), numbers at q = {q}")
    rows = [("quantity", "value", "route", "closed form in q" if report["exact"] else "expression in q")]
    for key, label in _MOMENT_LABELS.items():
        value = report[key]
        expr = report[f"{key}_expr"]
        if expr is None:
            rows.append((label, "does not exist", report[f"{key}_route"], "(the integral diverges; see below)"))
            continue
        shown = "-" if value is None else f"{value:.12g}"
        if "Integral" in expr:
            expr = "(no closed form known; numeric quadrature)"
        rows.append((label, shown, report[f"{key}_route"], expr))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3])
    if len(report.get("does_not_exist", {})) == len(_MOMENT_LABELS):
        pass
    elif report["exact"]:
        print("  exact: every value given is a closed form, evaluated to float64 accuracy (error estimate 0)")
    elif report["error_estimate"] is not None:
        print(f"  exact: no; numeric error estimate {report['error_estimate']:.2e} "
              "(QUADPACK's estimate; not a guaranteed bound)")
    if "note" in report:
        for line in str(report["note"]).split("\n"):
            print(f"  {line}")


def _cmd_moments(args: argparse.Namespace) -> int:
    act = _activation(args.activation, _parse_params(args.param))
    q = _parse_number(args.q, "--q")
    if q.is_negative:
        raise _UsageError(f"--q is a variance and must be non-negative, got {args.q!r}")
    report = moments_report(act, q)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_moments(report)
    return 0


# --- derive --------------------------------------------------------------------------------------


def _cmd_derive(args: argparse.Namespace) -> int:
    if args.kind == "claim":
        from .catalogue import family

        if args.claim is None:
            raise _UsageError("derive claim needs --claim NAME (varprop check --list shows the names)")
        if args.width is not None and args.width < 1:
            raise _UsageError(f"--width must be at least 1, got {args.width}")
        derivation = family(args.claim).at(args.width).derivation
    else:
        if args.claim is not None:
            raise _UsageError(f"--claim goes with the kind 'claim', not {args.kind!r}")
        default = "linear" if args.kind == "glorot" else "relu"
        act = _activation(args.activation or default, _parse_params(args.param))
        function = DERIVATIONS[args.kind]
        options: dict[str, object] = {}
        if args.kind == "condition":
            options = {"mode": args.mode, "weights": args.weights}
        elif args.kind == "glorot":
            options = {"weights": args.weights}
        elif args.kind == "forward":
            options = {"weight_mean": args.weight_mean}
        derivation = function(act, **options)
    reports = derivation.verify() if args.verify else ()
    if args.format == "json":
        payload = derivation.to_dict()
        if args.verify:
            payload["verify"] = [report.to_dict() for report in reports]
        print(json.dumps(payload, indent=2))
    elif args.format == "latex":
        print(derivation.latex(standalone=args.standalone))
    elif args.format == "markdown":
        print(derivation.markdown())
    else:
        print(derivation.text(), end="")
    if args.verify and args.format != "json":
        print("\nRe-running every check from the stored steps:")
        for report in reports:
            status = {True: "ok", False: "FAILED", None: "not checked"}[report.ok]
            print(f"  ({report.step}) {report.kind:<10} {status:<11} {report.detail}")
    if any(report.ok is False for report in reports):
        return 1
    return 0


# --- kernel and meanfield ------------------------------------------------------------------------


def _print_derivation(derivation: object, fmt: str) -> None:
    if fmt == "latex":
        print(derivation.latex())
    elif fmt == "markdown":
        print(derivation.markdown())
    else:
        print(derivation.text(), end="")


def _variance_option(text: str, option: str) -> sp.Expr:
    value = _parse_number(text, option)
    if value.is_negative:
        raise _UsageError(f"{option} is a variance and must be non-negative, got {text!r}")
    return value


def _cmd_kernel(args: argparse.Namespace) -> int:
    from .derive.gaussian.bivariate import cross_expectation
    from .derive.meanfield import kernel_derivation

    act = _activation(args.activation, _parse_params(args.param))
    q1 = _variance_option(args.q1, "--q1")
    q2 = _variance_option(args.q2, "--q2")
    c = _parse_number(args.c, "--c")
    if not -1 <= float(c) <= 1:
        raise _UsageError(f"--c is a correlation and must be in [-1, 1], got {args.c!r}")
    result = cross_expectation(act, q1, q2, c, derivative=args.derivative)
    number = result.evaluate()
    derivation = kernel_derivation(act, q1, q2, c, derivative=args.derivative)
    name = "phi'" if args.derivative else "phi"
    if args.json:
        payload = {
            "activation": str(act), "q1": float(q1), "q2": float(q2), "c": float(c), "derivative": args.derivative,
            "value": number.value, "expression": str(result.value), "route": result.route, "exact": result.exact,
            "error_estimate": result.error_estimate, "derivation": derivation.to_dict(),
        }
        print(json.dumps(payload, indent=2))
        return 0
    if args.format == "text":
        estimate = "closed form, correct to float64" if result.exact else f"error estimate {result.error_estimate:.1e}"
        print(f"E[{name}(u) {name}(v)] = {number.value:.15g}  ({result.route}; {estimate})")
        print(f"  for {act}, (u, v) centred jointly Gaussian with variances {args.q1}, {args.q2} and correlation {args.c}\n")
    _print_derivation(derivation, args.format)
    return 0


def _file_stem(act: Activation) -> str:
    """A file name for an activation: its name, or 'expression' for user text."""
    return act.name if act.name != "expression" else "expression"


def _cmd_meanfield(args: argparse.Namespace) -> int:
    from .derive.meanfield import edge_of_chaos, mean_field

    act = _activation(args.activation, _parse_params(args.param))
    bias = float(_variance_option(args.bias_variance, "--bias-variance"))
    if args.edge_of_chaos:
        if args.weight_variance is not None:
            raise _UsageError("--edge-of-chaos gives the critical weight variance itself; drop --weight-variance")
        if args.points < 2 or args.points > 1000:
            raise _UsageError(f"--points must be in [2, 1000], got {args.points}")
        top = float(_variance_option(args.max_bias_variance, "--max-bias-variance"))
        biases = [top * i / (args.points - 1) for i in range(args.points)]
        rows, notes = [], []
        for bias_variance in biases:
            try:
                point = edge_of_chaos(act, [bias_variance])[0]
                rows.append({"bias_variance": bias_variance, "weight_variance": point.weight_variance, "q_star": point.q_star})
            except VarpropError as exc:  # the line does not reach this bias variance
                rows.append({"bias_variance": bias_variance, "weight_variance": None, "q_star": None})
                notes.append(str(exc))
        if all(row["weight_variance"] is None for row in rows):
            raise _UsageError(notes[0])
        if args.plot is not None:
            from .plot import phase_data, phase_figure, save_figure

            out = output_directory(args.plot, "--plot directory")
            png, svg = save_figure(phase_figure(phase_data(act)), out / f"phase-{_file_stem(act)}")
            print(f"varprop meanfield: wrote {png} and {svg}", file=sys.stderr)
        if args.json:
            print(json.dumps({"activation": str(act), "edge_of_chaos": rows, "notes": notes}, indent=2))
            return 0
        print(f"The edge of chaos of {act}: chi_1 = 1 (Schoenholz et al. 2017, Fig. 1)")
        print(f"  {'sigma_b^2':>10}  {'sigma_w^2':>14}  {'q*':>14}")
        for row in rows:
            if row["weight_variance"] is None:
                print(f"  {row['bias_variance']:>10.4g}  {'none':>14}  {'-':>14}")
            elif row["q_star"] is None:
                print(f"  {row['bias_variance']:>10.4g}  {row['weight_variance']:>14.10g}  {'every q':>14}")
            else:
                print(f"  {row['bias_variance']:>10.4g}  {row['weight_variance']:>14.10g}  {row['q_star']:>14.10g}")
        if notes:
            print(f"  none: {notes[0]}")
        return 0
    weight = None if args.weight_variance is None else float(_variance_option(args.weight_variance, "--weight-variance"))
    out = None if args.plot is None else output_directory(args.plot, "--plot directory")
    result = mean_field(act, weight, bias)
    if out is not None:
        from .plot import c_map_data, c_map_figure, save_figure

        if result.q_star is not None and result.q_star.value == 0 and not result.scale_free:
            raise _UsageError("at q* = 0 the c-map is not defined (the signal vanishes): no c-map to plot")
        png, svg = save_figure(c_map_figure([c_map_data(result)]), out / f"c-map-{_file_stem(act)}")
        print(f"varprop meanfield: wrote {png} and {svg}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    if args.format == "text":
        print(result.text(), end="")
        return 0
    for derivation in result.derivations:
        _print_derivation(derivation, args.format)
    return 0


def _cmd_gains(args: argparse.Namespace) -> int:
    from .gains import format_gains, gains_table

    rows = gains_table()
    if args.json:
        print(json.dumps({"rows": [row.to_dict() for row in rows]}, indent=2))
    else:
        print(format_gains(rows), end="")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from .catalogue import CATALOGUE, family, law_claims
    from .claimfile import load_claims
    from .montecarlo import check_family, format_results
    from .montecarlo.verdict import POWER

    if args.list:
        for name, entry in CATALOGUE.items():
            print(f"  {name:<40} {entry.description}")
        return 0
    notes: dict[str, str] = {}
    derived: dict[str, object] = {}
    laws: list = []  # law claims of a claim file ([[law]] tables)
    if args.all:
        if args.target is not None:
            raise _UsageError(f"give either --all or a claim name / FILE.toml, not both (got {args.target!r})")
        targets = CATALOGUE.with_sweeps()
        laws = list(law_claims())
    elif args.target is None:
        raise _UsageError("give a claim name, a FILE.toml or --all (varprop check --list shows the names)")
    elif args.target.endswith(".toml"):
        from .claimfile import load_laws

        file_claims = load_claims(args.target)
        laws = load_laws(args.target)
        targets = [fc.target for fc in file_claims]
        notes = {fc.claim.name: fc.agreement for fc in file_claims}
        derived = {fc.claim.name: fc.derivation for fc in file_claims}
    else:
        targets = [family(args.target)]
    for option in ("width", "samples"):
        value = getattr(args, option)
        if value is not None and value < (1 if option == "width" else 2):
            raise _UsageError(f"--{option} must be at least {1 if option == 'width' else 2}, got {abbreviate(value)}")
    check_seed(args.seed, "--seed")
    from .montecarlo.executors import parse_executor

    parse_executor(args.executor)  # a bad name fails before any work
    with progress_bar("varprop check: networks sampled", quiet=args.quiet, unit="network") as progress:
        # the claims' tests and the law claims' tests form one Holm family
        checked = check_family(targets, laws, samples=args.samples, seed=args.seed, rtol=args.rtol, alpha=args.alpha,
                               width=args.width, atol=args.atol, progress=progress, engine=args.engine,
                               executor=args.executor)
    results, law_verdicts = checked.results, checked.laws
    if args.json:
        payload = [dict(r.to_dict(), derivation=notes[r.name], **({"derived": derived[r.name].to_dict()}
                                                                   if derived.get(r.name) is not None else {}))
                   if r.name in notes else r.to_dict() for r in results]
        laws_payload = [{"name": v.test.name, "outcome": v.outcome, "message": v.message, "ks_statistic": v.test.statistic,
                         "p_value": v.test.p_value, "dead": v.test.dead_count, "dead_expected": v.test.dead_expected,
                         "dead_p_value": v.test.dead_p_value, "detectable": v.detectable,
                         "networks_needed": v.networks_needed, "cdf_accuracy": v.test.accuracy} for v in law_verdicts]
        print(json.dumps({"rtol": args.rtol, "atol": args.atol, "alpha": args.alpha, "power": POWER, "seed": args.seed,
                          "family_size": checked.tests, "results": payload,
                          **({"laws": laws_payload} if laws_payload else {})}, indent=2))
    else:
        if results:
            print(format_results(results))
        if law_verdicts:
            from .montecarlo.laws import format_laws

            print(format_laws(law_verdicts))
        for name, note in notes.items():  # the claim file's own prediction against varprop's derivation
            outcome = next((r.outcome for r in results if r.name == name), None)
            if outcome == "FAIL" and note.startswith("matches"):
                # Only a false alarm (probability at most --alpha for everything checked together) gets here.
                note = (f"{note[len('matches '):]} gives the same value; the sample contradicts both: a false alarm "
                        f"(at most {args.alpha:g} for all the claims together) or a defect of the derivation's assumptions")
                print(f"{name}: {note}")
                continue
            print(f"{name}: your prediction {note}" if derived.get(name) is not None else f"{name}: {note}")
    outcomes = {r.outcome for r in results} | {v.outcome for v in law_verdicts}
    if "FAIL" in outcomes:
        return 1
    if "INCONCLUSIVE" in outcomes:
        return 3
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from .explain import TOPICS, answer
    from .plot import save_figure

    if args.list or args.topic is None:
        if args.topic is None and not args.list:
            raise _UsageError("give a topic (varprop explain --list shows them)")
        for name, topic in TOPICS.items():
            print(f"  {name:<24} (depth {topic.depth}) {topic.question}")
        return 0
    from .explain import settings_for

    if args.topic not in TOPICS:
        answer(args.topic)  # raises: unknown topic, with the known ones
    check_seed(args.seed, "--seed")
    settings_for(args.topic, seed=args.seed, width=args.width, depth=args.depth)  # a bad size fails here
    # Every option is valid; make the plot directory now, so a bad one fails before the long computation.
    out = None if args.plot is None else output_directory(args.plot, "--plot directory")
    result = answer(args.topic, seed=args.seed, width=args.width, depth=args.depth)
    data = result.figure_data()
    figure_name = None
    if out is not None:
        png, svg = save_figure(result.figure(data), out / args.topic)
        figure_name = png.name
        print(f"varprop explain: wrote {png} and {svg}", file=sys.stderr)
    if args.format == "markdown":
        print(result.markdown(figure=figure_name))
    elif args.format == "latex":
        print(result.latex(figure=figure_name))
    else:
        print(result.text(data=data), end="")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report

    with progress_bar("varprop report", quiet=args.quiet) as progress:
        summary = build_report(args.out, seed=args.seed, width=args.width, depth=args.depth, progress=progress)
    print(summary.table())
    print()
    for answer_ in summary.answers:
        outcomes = ", ".join(f"{r.outcome}" for r in answer_.checks)
        print(f"{answer_.topic.name:<24} {outcomes}")
    print()
    print(f"wrote {len(summary.files)} files to {summary.directory}/ (report.md, report.tex, results.json, figures/)")
    print(summary.pdf_note)
    if summary.failures:
        print("claims that should hold and FAILED: " + ", ".join(summary.failures))
        return 1
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    from .torch import audit, load_factory  # raises a VarpropError naming the extra when torch is missing

    factory, label = load_factory(args.target)
    check_seed(args.seed, "--seed")
    figure = None if args.depth_plot is None else _figure_path(args.depth_plot)
    with progress_bar("varprop audit", quiet=args.quiet, unit="network") as progress:
        result = audit(factory, args.input_shape, networks=args.networks, batch=args.batch, seed=args.seed,
                       rtol=args.rtol, name=label, progress=progress)
    if figure is not None:
        result.figure().savefig(figure, dpi=150)
        print(f"varprop audit: wrote {figure}", file=sys.stderr)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.text(), end="\n" if args.json else "")
    return 1 if result.failures else 0


def _figure_path(text: str):
    import pathlib

    path = pathlib.Path(text)
    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise _UsageError(f"--depth-plot must end in .png, .svg or .pdf, got {abbreviate(text)}")
    if not path.parent.is_dir():
        raise _UsageError(f"--depth-plot: no such directory {abbreviate(str(path.parent))}")
    return path


def _cmd_activations(args: argparse.Namespace) -> int:
    for name, summary in builtin_summary().items():
        print(f"  {name:<13} {summary}")
    print("\nOr an expression in x, e.g. 'max(x, 0) - 0.5' (functions: abs, atan, cos, cosh, erf, erfc, exp, log, "
          "max, min, relu, sigmoid, sin, sinh, softplus, sqrt, step, tanh).")
    return 0


def _cmd_initialisers(args: argparse.Namespace) -> int:
    from .weights import initialiser_table

    rows = initialiser_table()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(f"  {row['call']}\n      {row['law']}")
    print("\nAt the defaults; n_in and n_out are the layer's fans. In a claim file: init = \"NAME\", or with "
          "arguments init = { name = \"NAME\", a = \"sqrt(5)\", mode = \"fan_out\" }; in Python: "
          "varprop.weights.init_scheme(NAME, a=5 ** 0.5).")
    return 0


# --- parser --------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse with the project's error format: one line ``varprop: ...`` and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        # Quoted values (an invalid choice, a 5000-digit number) are abbreviated, never dumped.
        message = re.sub(r"'([^']{61,})'", lambda m: abbreviate(m.group(1)), message)
        command = self.prog.removeprefix("varprop").strip()
        where = f"{command}: " if command else ""
        self.exit(2, f"varprop: {where}{message} ({self.prog} --help shows the usage)\n")


def _integer(option: str) -> Callable[[str], int]:
    """An argparse type for the integer ``option`` whose error abbreviates a huge text."""

    def parse(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {abbreviate(text)}") from None

    parse.__name__ = "integer"
    return parse


def _size_options(parser: argparse.ArgumentParser) -> None:
    """--width and --depth of the networks the explain topics measure."""
    from .explain import DEFAULT_WIDTH, MAX_DEPTH, MAX_WIDTH

    parser.add_argument("--width", type=_integer("--width"), default=None, metavar="N",
                        help=f"hidden width of the networks each topic measures (default {DEFAULT_WIDTH}, at most {MAX_WIDTH})")
    parser.add_argument("--depth", type=_integer("--depth"), default=None, metavar="L",
                        help=f"number of dense layers (default: each topic's own, shown by --list; at most {MAX_DEPTH})")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="varprop",
        description="Derive (sympy) and check (Monte Carlo) how signal and gradient moments propagate "
        "through randomly initialised neural networks.",
    )
    parser.add_argument("--version", action="version", version=f"varprop {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    activation_help = (
        "a built-in activation (" + ", ".join(BUILTIN_ACTIVATIONS) + ") or an expression in x such as 'max(x, 0) - 0.5'"
    )
    param_help = "activation parameter, e.g. a=0.2 (leaky_relu), c=0.5 (shifted_relu), alpha=1 (elu); NAME alone stays symbolic"

    moments_parser = commands.add_parser(
        "moments",
        help="Gaussian moments of an activation",
        description="E[phi(z)], E[phi(z)^2], Var[phi(z)] and E[phi'(z)^2] for z ~ N(0, q): closed forms in q where "
        "they exist (rectifier family, erf, gelu, elu, selu, sin/cos, polynomials), numeric quadrature with an error "
        "estimate otherwise (tanh, sigmoid, silu, softplus). A moment whose integral diverges (E[phi'(z)^2] of "
        "abs(x)**0.5) is shown as 'does not exist' (null in JSON, with the reason under does_not_exist).",
    )
    moments_parser.add_argument("activation", metavar="ACTIVATION", help=activation_help)
    moments_parser.add_argument("--param", action="append", default=[], metavar="NAME[=VALUE]", help=param_help)
    moments_parser.add_argument("--q", default="1", metavar="Q", help="variance of z at which numbers are given (default 1)")
    moments_parser.add_argument("--json", action="store_true", help="print JSON: numbers, *_expr sympy text, *_route, exact, error_estimate "
                                "(error_bound: deprecated alias), does_not_exist, note")
    moments_parser.set_defaults(handler=_cmd_moments)

    derive_parser = commands.add_parser(
        "derive",
        help="derive a recursion or condition step by step",
        description="Derive, as checked sympy steps: forward (He et al. 2015 eqs. 6-9), backward (eqs. 11-13), "
        "weight-gradient, condition (eq. 10 fan_in / eq. 14 fan_out, or the fixed point for non-homogeneous "
        "activations), ratio (the two conditions' products) and glorot (Glorot & Bengio 2010, eqs. 5-16); or, with "
        "'claim --claim NAME', the derivation whose result is a catalogue claim's prediction. Every step says "
        "which earlier steps it uses, how it was checked and how exactly it holds; --verify re-runs the checks.",
    )
    derive_parser.add_argument("kind", choices=(*DERIVATIONS, "claim"), metavar="KIND",
                               help="one of: " + ", ".join(DERIVATIONS) + "; or 'claim' with --claim NAME: the "
                               "derivation behind a catalogue claim, step by step from the network's input")
    derive_parser.add_argument("--claim", metavar="NAME", default=None,
                               help="with KIND claim: a catalogue claim (varprop check --list)")
    derive_parser.add_argument("--width", type=int, default=None, metavar="N",
                               help="with KIND claim: the hidden width (default: the claim's own)")
    derive_parser.add_argument("--verify", action="store_true",
                               help="re-run every step's check from the stored steps and report each (exit 1 if one fails)")
    derive_parser.add_argument("--activation", default=None,
                               help=activation_help + " (default relu; for glorot linear, the regime Glorot & Bengio "
                               "derive in: a non-linear activation needs the linear-regime approximation)")
    derive_parser.add_argument("--param", action="append", default=[], metavar="NAME[=VALUE]", help=param_help)
    derive_parser.add_argument("--weights", choices=DISTRIBUTIONS, default=None,
                               help="weight law for the condition's parameter (default normal; glorot: uniform)")
    derive_parser.add_argument("--mode", choices=("fan_in", "fan_out"), default="fan_in", help="condition: which fan (default fan_in)")
    derive_parser.add_argument("--weight-mean", action="store_true", help="forward: keep a non-zero weight mean E[w]")
    derive_parser.add_argument("--format", choices=_FORMATS, default="text", help="output format (default text)")
    derive_parser.add_argument("--standalone", action="store_true", help="latex: a whole document that pdflatex compiles")
    derive_parser.set_defaults(handler=_cmd_derive)

    kernel_parser = commands.add_parser(
        "kernel",
        help="E[phi(u) phi(v)] for a correlated Gaussian pair (the mean-field kernel)",
        description="E[phi(u) phi(v)] (or E[phi'(u) phi'(v)] with --derivative) for (u, v) centred and jointly "
        "Gaussian with variances Q1, Q2 and correlation C, as a derivation: closed forms for the rectifier family "
        "(arc-cosine kernels, Cho & Saul 2009), step, erf (Williams 1997), gelu (Tsuchida et al. 2020) and "
        "polynomials (Isserlis), otherwise 2-D quadrature with an error estimate (tanh, sigmoid, silu, softplus, "
        "expressions). The route that produced the value is printed.",
    )
    kernel_parser.add_argument("activation", metavar="ACTIVATION", help=activation_help)
    kernel_parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help=param_help)
    kernel_parser.add_argument("--q1", default="1", metavar="Q", help="variance of u (default 1; non-negative)")
    kernel_parser.add_argument("--q2", default="1", metavar="Q", help="variance of v (default 1; non-negative)")
    kernel_parser.add_argument("--c", default="0", metavar="C", help="correlation of u and v, in [-1, 1] (default 0)")
    kernel_parser.add_argument("--derivative", action="store_true", help="E[phi'(u) phi'(v)] instead")
    kernel_parser.add_argument("--json", action="store_true", help="print JSON: value, expression, route, exact, "
                               "error_estimate (null for closed forms), derivation")
    kernel_parser.add_argument("--format", choices=("text", "markdown", "latex"), default="text",
                               help="format of the derivation (default text)")
    kernel_parser.set_defaults(handler=_cmd_kernel)

    meanfield_parser = commands.add_parser(
        "meanfield",
        help="mean-field analysis: q*, chi_1, c*, depth scales, phase, edge of chaos",
        description="The mean-field theory of signal propagation (Poole et al. 2016; Schoenholz et al. 2017) for a "
        "wide dense network with weight variance S/fan_in and bias variance B: the q-map and its fixed point q*, "
        "chi_1 (eq. 5), the c-map and its fixed points c* with their slopes chi_c (eq. 8), the depth scales xi_q "
        "and xi_c (eqs. 6, 9) and the phase (ordered: chi_1 < 1, chaotic: chi_1 > 1, critical). Without "
        "--weight-variance the critical one at --bias-variance is used (relu: 2, He et al. 2015). "
        "--edge-of-chaos prints the critical line sigma_w^2(sigma_b^2) instead.",
    )
    meanfield_parser.add_argument("activation", metavar="ACTIVATION", help=activation_help)
    meanfield_parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help=param_help)
    meanfield_parser.add_argument("--weight-variance", default=None, metavar="S",
                                  help="sigma_w^2, the weight variance times the fan-in (default: the edge of chaos)")
    meanfield_parser.add_argument("--bias-variance", default="0", metavar="B", help="sigma_b^2 (default 0)")
    meanfield_parser.add_argument("--edge-of-chaos", action="store_true",
                                  help="print the critical line: sigma_w^2 and q* at --points bias variances from 0 "
                                  "to --max-bias-variance")
    meanfield_parser.add_argument("--points", type=_integer("--points"), default=11, metavar="N",
                                  help="with --edge-of-chaos: number of bias variances (default 11)")
    meanfield_parser.add_argument("--max-bias-variance", default="0.5", metavar="B",
                                  help="with --edge-of-chaos: the largest bias variance (default 0.5)")
    meanfield_parser.add_argument("--plot", metavar="DIR", default=None,
                                  help="also draw the c-map with its fixed points (DIR/c-map-ACTIVATION.png, .svg); with "
                                  "--edge-of-chaos the phase diagram: xi_c contours and the critical line "
                                  "(DIR/phase-ACTIVATION.png, .svg)")
    meanfield_parser.add_argument("--json", action="store_true", help="print JSON (numbers, phase, fixed points, derivations)")
    meanfield_parser.add_argument("--format", choices=("text", "markdown", "latex"), default="text",
                                  help="output format (default text: the numbers, then the derivations)")
    meanfield_parser.set_defaults(handler=_cmd_meanfield)

    gains_parser = commands.add_parser(
        "gains",
        help="PyTorch's calculate_gain and NFNets' gammas beside the exact gains",
        description="For relu, leaky_relu (slopes 0.01, 0.1, 0.2 and kaiming_uniform's sqrt(5)), linear, tanh, sigmoid, "
        "selu, elu, gelu (and its tanh approximation), silu, mish and softplus: PyTorch's calculate_gain beside the exact gains 1/sqrt(E[phi(z)^2]) "
        "(keeps the second moment) and 1/sqrt(E[phi'(z)^2]) (keeps the gradient's, chi_1 = 1) at z ~ N(0, 1) and at "
        "the fixed point q* of q -> g^2 E[phi(sqrt(q) z)^2] a deep net with PyTorch's gain settles at; and the NFNets "
        "gammas (Brock et al. 2021: Monte Carlo estimates of 1/sqrt(Var[phi(z)]), the variance) beside the exact "
        "values; each difference in percent. Closed forms where they exist, quadrature otherwise.",
    )
    gains_parser.add_argument("--json", action="store_true", help="print JSON: one object per activation with every "
                              "number, the closed form (expr) or quadrature error estimate, and the differences")
    gains_parser.set_defaults(handler=_cmd_gains)

    check_parser = commands.add_parser(
        "check",
        help="check claims against sampled networks (Monte Carlo)",
        description="Check a catalogue claim (NAME), every catalogue claim (--all) or your own claims (FILE.toml, "
        "format in docs/claims.rst; a file's init names a built-in scheme or any framework initialiser, see "
        "varprop initialisers) against independently sampled random networks. Each claim gets PASS, FAIL, "
        "INCONCLUSIVE (too noisy to resolve --rtol) or MEASURED (approximations); Holm's procedure holds the "
        "false-alarm rate of everything checked together at --alpha. Exit code 0 when all pass, 1 when one fails, "
        "3 when one is inconclusive, 2 for bad input. Samples that cannot fit in VARPROP_MAX_MEMORY (default half the "
        "physical memory) or VARPROP_MAX_DRAWS weights (default 1e10) are refused before sampling.",
    )
    check_parser.add_argument("target", nargs="?", metavar="NAME|FILE.toml", help="a catalogue claim or a claim file")
    check_parser.add_argument("--all", action="store_true", help="check the whole catalogue")
    check_parser.add_argument("--list", action="store_true", help="list the catalogue's claims")
    check_parser.add_argument("--width", type=_integer("--width"), default=None, metavar="N",
                              help="an exact claim: check at this hidden width only; an asymptotic claim: the largest "
                              "width of its sweep, the others scaled with it (default: the claim's widths and sweep)")
    check_parser.add_argument("--samples", type=_integer("--samples"), default=None, metavar="T",
                              help="networks per width (default: sized from a pilot to resolve --rtol)")
    check_parser.add_argument("--seed", type=_integer("--seed"), default=0, metavar="S", help="random seed (default 0)")
    check_parser.add_argument("--rtol", type=float, default=0.01, metavar="R", help="relative tolerance to resolve (default 0.01)")
    check_parser.add_argument("--alpha", type=float, default=0.05, metavar="A", help="family-wise false-alarm rate (default 0.05)")
    check_parser.add_argument("--atol", type=float, default=None, metavar="A",
                              help="absolute tolerance, in the observable's units, for claims that predict 0 "
                              "(default: --rtol read as an absolute number; a claim file's atol comes first)")
    check_parser.add_argument("--json", action="store_true", help="print JSON")
    check_parser.add_argument("--engine", choices=("auto", "full", "conditional"), default="auto",
                              help="sampling engine: conditional (exact, O(width) per layer, Gaussian dense networks), "
                              "full (every weight matrix drawn, any network), auto (default: conditional where valid); "
                              "each result says which engine produced it")
    check_parser.add_argument("--executor", default="auto", metavar="auto|serial|processes[=N]|dask[=ADDRESS]",
                              help="where blocks of networks run: auto (default: every CPU for samples large enough "
                              "to split), this process (serial), N local processes (default all CPUs), or a Dask "
                              "cluster (a LocalCluster without ADDRESS; needs pip install 'varprop[dask]'); results "
                              "are bit-identical whatever the executor")
    check_parser.add_argument("--quiet", action="store_true", help="no progress bar (none is drawn unless stderr is a terminal)")
    check_parser.set_defaults(handler=_cmd_check)

    explain_parser = commands.add_parser(
        "explain",
        help="answer a question about initialisation: derivation, Monte Carlo evidence, plot",
        description="Answer a question about initialisation in plain words, with the derivation behind it, a "
        "table of Monte Carlo checks (estimate, SE, verdict) and the per-layer numbers of its figure. Topics: "
        "why-half, why-not-zero-mean, pre-vs-post-activation, fan-in-vs-fan-out, glorot-vs-he, does-the-mean-matter, "
        "pytorch-default, edge-of-chaos, does-width-matter, residual-scaling, where-does-5-3-come-from.",
    )
    explain_parser.add_argument("topic", nargs="?", metavar="TOPIC", help="a topic (see --list)")
    explain_parser.add_argument("--list", action="store_true", help="list the topics")
    explain_parser.add_argument("--format", choices=("text", "markdown", "latex"), default="text",
                                help="output format (default text)")
    explain_parser.add_argument("--plot", metavar="DIR", default=None, help="also write the figure as DIR/TOPIC.png and .svg")
    explain_parser.add_argument("--seed", type=_integer("--seed"), default=0, metavar="S", help="random seed (default 0)")
    _size_options(explain_parser)
    explain_parser.set_defaults(handler=_cmd_explain)

    report_parser = commands.add_parser(
        "report",
        help="the main job: derive and check the whole catalogue, answer every topic, write the report",
        description="Derive the catalogue, check every claim by Monte Carlo, answer every explain topic, and write "
        "report.md, report.tex (report.pdf when pdflatex is on PATH), figures/*.png and *.svg and results.json "
        "into --out. Exits 1 when a claim that should hold fails.",
    )
    report_parser.add_argument("--out", default="varprop-report", metavar="DIR", help="output directory (default varprop-report)")
    report_parser.add_argument("--seed", type=_integer("--seed"), default=0, metavar="S", help="random seed (default 0)")
    _size_options(report_parser)
    report_parser.add_argument("--quiet", action="store_true", help="no progress bar (none is drawn unless stderr is a terminal)")
    report_parser.set_defaults(handler=_cmd_report)

    audit_parser = commands.add_parser(
        "audit",
        help="audit a PyTorch model's initialisation (needs the torch extra)",
        description="Instantiate a PyTorch model many times with its own initialisers, read each layer's weight "
        "and bias law from what torch drew, derive every layer's forward and gradient second moment, measure them "
        "on the real model (forward and autograd backward) and judge each with the checker; say where the signal "
        "explodes or vanishes and which init would fix it. PATH.py:FACTORY names a function (or class) in a Python "
        "file that returns a fresh torch.nn.Module. Supported: nn.Linear, nn.Conv1d/nn.Conv2d (no dilation, zero "
        "padding), flatten/view/reshape keeping the batch, nn.Dropout (measured in train() mode), nn.LayerNorm and "
        "nn.RMSNorm (over the features), nn.BatchNorm1d (over the --batch inputs, train() mode), nn.BatchNorm2d (per channel over the --batch inputs and the positions), residual additions x + alpha * f(x), and the activation modules and "
        "functions (docs/torch.rst). The model runs in float64. Needs pip install -e '.[torch]'.",
    )
    audit_parser.add_argument("target", metavar="PATH.py:FACTORY", help="the model file and the factory in it")
    audit_parser.add_argument("--input-shape", type=_integer("--input-shape"), nargs="+", default=None, metavar="N",
                              help="shape of one input without the batch dimension, e.g. 64, or 3 8 8 for a Conv2d "
                              "of 3 channels on 8 x 8 images (default: the first nn.Linear's in_features)")
    audit_parser.add_argument("--networks", type=_integer("--networks"), default=2000, metavar="N",
                              help="instances measured (default 2000)")
    audit_parser.add_argument("--batch", type=_integer("--batch"), default=8, metavar="B",
                              help="Gaussian inputs per instance, the batch an nn.BatchNorm1d or nn.BatchNorm2d normalises over "
                              "(default 8)")
    audit_parser.add_argument("--seed", type=_integer("--seed"), default=0, metavar="S", help="random seed (default 0)")
    audit_parser.add_argument("--rtol", type=float, default=0.05, metavar="R",
                              help="relative error a PASS resolves with 90%% power (default 0.05)")
    audit_parser.add_argument("--json", action="store_true", help="print JSON")
    audit_parser.add_argument("--depth-plot", metavar="FILE", default=None,
                              help="write the predicted vs measured second moment per layer (log scale, +-2 SE) to "
                              "FILE (.png, .svg or .pdf)")
    audit_parser.add_argument("--quiet", action="store_true", help="no progress bar (none is drawn unless stderr is a terminal)")
    audit_parser.set_defaults(handler=_cmd_audit)

    list_parser = commands.add_parser("activations", help="list the built-in activations", description="List the built-in activations.")
    list_parser.set_defaults(handler=_cmd_activations)

    init_parser = commands.add_parser(
        "initialisers", help="list the init schemes a claim file's init names: built-in and every framework initialiser",
        description="List every name a claim file's init (and varprop.weights.init_scheme) accepts: the built-in "
        "schemes and every PyTorch, Keras and Flax initialiser, with its arguments, their defaults and the weight "
        "law they give (the framework's own formula, e.g. torch.nn.Linear: kaiming_uniform_(a=sqrt(5)), "
        "Var[w] = 1/(3 n_in)).")
    init_parser.add_argument("--json", action="store_true", help="print JSON: name, call (with the defaults), arguments (defaults; numbers as text), law, source")
    init_parser.set_defaults(handler=_cmd_initialisers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if getattr(args, "weights", "unset") is None:
        args.weights = "uniform" if args.kind == "glorot" else "normal"
    try:
        return args.handler(args)
    except VarpropError as exc:
        print(f"varprop: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `varprop derive ... | head`
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
