"""The ``jaxem`` argument parser: global options, ``demo`` and ``fit``.

Every option is checked here, so a bad command line fails with one line before
any data is read or anything is compiled.
"""

from __future__ import annotations

import argparse
import math

import jax

import jaxem
from jaxem._io import MAX_COLUMNS
from jaxem.families.gaussian import COVARIANCE_TYPES
from jaxem.models.mixture import INIT_METHODS

__all__ = ["UsageError", "build_parser"]


class UsageError(Exception):
    """A bad command line or output path: reported as ``jaxem: error: ...``, exit 2."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line: ``jaxem: error: ...``."""

    def error(self, message: str):
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _integer(minimum: int, maximum: int | None = None):
    """An argparse type: an integer in ``[minimum, maximum]``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


def _non_negative_float(text: str) -> float:
    """An argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


_SEED = _integer(0, 2**32 - 1)

_CACHE_HELP = (
    "Compiled programs are kept in a persistent cache, by default in "
    "$JAXEM_CACHE_DIR or else $XDG_CACHE_HOME/jaxem/xla (~/.cache/jaxem/xla), so later "
    "runs skip most of the compiling; --no-cache or JAXEM_NO_CACHE=1 turns it off."
)


def _add_cache_options(parser: argparse.ArgumentParser, default) -> None:
    """``--no-cache`` and ``--cache-dir``; subcommands pass ``argparse.SUPPRESS`` as
    ``default`` so they do not overwrite the same option given before the command."""
    parser.add_argument(
        "--no-cache",
        action="store_true",
        default=default if default is argparse.SUPPRESS else False,
        help="do not read or write the persistent compilation cache (also: JAXEM_NO_CACHE=1)",
    )
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        default=default,
        help="persistent compilation cache folder; default: $JAXEM_CACHE_DIR, else "
        "~/.cache/jaxem/xla",
    )


def _common_options() -> argparse.ArgumentParser:
    """Options every command takes: progress display and the cache settings."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show elapsed time and stage (compiling, fitting) on stderr; "
        "default: only when stderr is a terminal",
    )
    _add_cache_options(common, argparse.SUPPRESS)
    return common


def _add_demo(commands, common) -> None:
    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="fit the Old Faithful eruptions shipped with jaxem",
        description="Fit a full-covariance Gaussian mixture to the Old Faithful eruptions "
        "(272 rows, shipped with jaxem) with many batched restarts, and report the fit, "
        "how the restarts fared, and compile and fit times apart. Two components is the "
        "classic answer and the lowest BIC among 1 to 4.",
        epilog=_CACHE_HELP,
    )
    demo.add_argument("--restarts", type=_integer(1), default=256, help="default: 256")
    demo.add_argument("--components", "-k", type=_integer(1), default=2, help="default: 2")
    demo.add_argument("--seed", type=_SEED, default=0, help="random seed; default: 0")
    demo.add_argument(
        "--repeats",
        type=_integer(0),
        metavar="N",
        default=1,
        help="identical fits timed after the first, to show the fit without compiling; default: 1",
    )


def _add_fit(commands, common) -> None:
    fit = commands.add_parser(
        "fit",
        parents=[common],
        help="fit a Gaussian mixture to a CSV, .npy or .npz file",
        description="Fit a Gaussian mixture (jaxem.GaussianMixture) to FILE with batched "
        "restarts and print a summary. FILE is a CSV with a header row and numeric "
        "columns, a .npy array (n_samples, n_features), or a .npz archive (array 'X' or "
        "its only array; see --key). A 1-D array is one feature. Refused, with one "
        f"line: more than {MAX_COLUMNS:,} columns (a full covariance over more is 40 GB per "
        "component and restart), and an .npy array (alone or in an .npz) whose header "
        "declares more than the memory available (checked before reading the data).",
        epilog=_CACHE_HELP,
    )
    fit.add_argument("file", metavar="FILE", help="data file: .csv, .npy or .npz")
    _add_data_options(fit.add_argument_group("data"))
    _add_model_options(fit.add_argument_group("model"))
    _add_engine_options(fit.add_argument_group("engine"))
    _add_output_options(fit.add_argument_group("output"))


def _add_data_options(data) -> None:
    data.add_argument("--key", help="array to read from an .npz file (default: X or the only one)")
    data.add_argument(
        "--delimiter",
        default=",",
        help="CSV field separator ('\\t' or 'tab' for tabs); default: ','",
    )
    data.add_argument(
        "--no-header",
        dest="header",
        action="store_false",
        help="the CSV has no header row (columns are named x0, x1, ...)",
    )


def _add_model_options(model) -> None:
    model.add_argument(
        "--components", "-k", type=_integer(1), default=1, help="number of components; default: 1"
    )
    model.add_argument(
        "--covariance-type", choices=COVARIANCE_TYPES, default="full", help="default: full"
    )
    model.add_argument(
        "--reg-covar",
        type=_non_negative_float,
        default=1e-6,
        help="added to covariance diagonals; default: 1e-6",
    )
    model.add_argument(
        "--init", choices=INIT_METHODS, default="kmeans", help="initialisation; default: kmeans"
    )


def _add_engine_options(engine) -> None:
    engine.add_argument(
        "--restarts",
        type=_integer(1),
        default=64,
        help="random restarts (n_init), run batched in one program; default: 64",
    )
    engine.add_argument(
        "--max-iter", type=_integer(1), default=100, help="EM iterations cap; default: 100"
    )
    engine.add_argument(
        "--tol",
        type=_non_negative_float,
        default=1e-3,
        help="stop when the mean log-likelihood per sample changes by less; default: 1e-3",
    )
    engine.add_argument("--seed", type=_SEED, default=0, help="random seed; default: 0")
    engine.add_argument(
        "--float64",
        action="store_true",
        help="compute in float64 (slower, digits as scikit-learn); default: float32",
    )


def _add_output_options(output) -> None:
    output.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        help="write the fit to FILE (.npz or .json): weights, means, covariances, "
        "precisions_cholesky, log_likelihood, n_iter, converged, per-restart "
        "log-likelihoods, n_iter and statuses; a .npz also loads back as the fitted "
        "GaussianMixture with jaxem.load(FILE)",
    )
    output.add_argument(
        "--labels", action="store_true", help="also write each row's most probable component"
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``jaxem`` argument parser with its ``demo`` and ``fit`` subcommands.

    The chosen subcommand is ``args.command`` (None when none was given).

    Examples
    --------
    >>> args = build_parser().parse_args(["--no-cache", "fit", "data.csv", "-k", "3"])
    >>> args.command, args.file, args.components, args.no_cache, args.cache_dir
    ('fit', 'data.csv', 3, True, None)
    """
    parser = _Parser(
        prog="jaxem",
        description="Batched Expectation-Maximization in JAX: Gaussian mixtures fitted with "
        "many random restarts at once, in one compiled program.",
        epilog=f"{_CACHE_HELP} Run 'jaxem demo' for a first look, 'jaxem fit --help' for "
        "your own data.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"jaxem {jaxem.__version__} (jax {jax.__version__})",
    )
    _add_cache_options(parser, None)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    common = _common_options()
    _add_demo(commands, common)
    _add_fit(commands, common)
    return parser
