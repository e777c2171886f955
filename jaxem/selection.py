"""Model selection for Gaussian mixtures (every component count, covariance type and
restart in one compiled program per covariance type) and for HMMs (over the number of
hidden states).

:func:`select` fits ``GaussianMixture(n_components=K, covariance_type=c, n_init=R,
...)`` for every ``K`` and ``c`` asked for, the way a loop of separate fits would,
and returns a :class:`Selection`: a table of BIC, AIC, ICL, log-likelihood,
parameter counts and how many restarts reached the best optimum (as R's mclust
reports, with scikit-learn's signs: lower is better), the chosen model and its fitted
estimator. The component counts of one covariance type share a model padded to the
largest count (:func:`jaxem.estimators._base.component_bucket`), so
:func:`jaxem.engine.fit_sweep` runs them, all their restarts and their final E-steps
in one program.

:func:`select_states` does the same for any HMM estimator over its number of states
(and, for :class:`~jaxem.GaussianHMM`, its covariance types): one fit per model, since
an HMM's states are not padded; the table is the same :class:`Selection`.
"""

from __future__ import annotations

import math
import warnings
from numbers import Integral

import jax
import numpy as np
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import _num_samples

from jaxem import engine
from jaxem.estimators import _validation
from jaxem.estimators._base import component_bucket
from jaxem.estimators._mixture import CONVERGENCE_MESSAGE
from jaxem.estimators.gaussian_mixture import GaussianMixture
from jaxem.estimators.hmm import _BaseHMM
from jaxem.families.gaussian import COVARIANCE_TYPES

__all__ = ["select", "select_states", "Selection", "CRITERIA"]

#: Criteria :func:`select` can choose by; all are "lower is better".
CRITERIA = ("bic", "aic", "icl")

#: Columns of :attr:`Selection.table`.
TABLE_DTYPE = np.dtype(
    [
        ("n_components", np.int64),
        ("covariance_type", "U9"),
        ("bic", np.float64),
        ("aic", np.float64),
        ("icl", np.float64),
        ("log_likelihood", np.float64),
        ("n_parameters", np.int64),
        ("n_reached_best", np.int64),
        ("n_init", np.int64),
        ("converged", np.bool_),
        ("n_iter", np.int64),
    ]
)


class Selection:
    """What :func:`select` found: the table, the chosen model and its estimator.

    Attributes
    ----------
    table : numpy structured array, one record per (component count, covariance type)
        Fields: ``n_components``, ``covariance_type``, ``bic``, ``aic``, ``icl``
        (lower is better), ``log_likelihood`` (total over the rows, of the final
        parameters), ``n_parameters``, ``n_reached_best`` (restarts whose final mean
        per-sample log-likelihood is within ``tol`` of the best restart's),
        ``n_init``, ``converged`` and ``n_iter`` (of the best restart). A model whose
        restarts all failed has infinite criteria and ``n_reached_best`` 0.
        Ordered by covariance type (as given), then component count.
    criterion : str
        The criterion the model was chosen by.
    best_ : tuple (n_components, covariance_type)
        The model with the lowest criterion (ties: the earlier record).
    estimator_ : GaussianMixture, or the HMM estimator given to :func:`select_states`
        That model, fitted: the best restart of the sweep, with the attributes a
        direct ``GaussianMixture(...).fit(X)`` with the same parameters sets (for
        HMMs: that direct fit).
    restarts_ : dict
        ``(n_components, covariance_type) -> engine.RestartSummary`` of every
        restart (final log-likelihoods, iterations, statuses, traces, trimmed
        parameters), for :mod:`jaxem.plots`.
    n_samples : int
        Rows of the data.
    title : str
        What was selected ("Gaussian mixture", or the HMM estimator's class name).
    """

    def __init__(self, table, criterion, best, estimator, restarts, n_samples, title=None):
        self.table = table
        self.criterion = criterion
        self.best_ = best
        self.estimator_ = estimator
        self.restarts_ = restarts
        self.n_samples = n_samples
        self.title = title or "Gaussian mixture"

    def as_records(self) -> list[dict]:
        """The table as a list of dicts of Python numbers and strings."""
        return [{name: record[name].item() for name in TABLE_DTYPE.names} for record in self.table]

    def criterion_values(self, criterion: str | None = None) -> dict[str, np.ndarray]:
        """``covariance_type -> (component counts, values)`` of ``criterion``
        (default: the one chosen by), for curves like mclust's BIC plot."""
        criterion = _check_criterion(criterion or self.criterion)
        curves = {}
        for covariance_type in dict.fromkeys(self.table["covariance_type"].tolist()):
            rows = self.table[self.table["covariance_type"] == covariance_type]
            curves[covariance_type] = (rows["n_components"], rows[criterion])
        return curves

    def to_string(self) -> str:
        """The table as aligned text, the chosen model marked with ``*``."""
        header = (
            f"{'K':>3} {'covariance':<10} {'BIC':>12} {'AIC':>12} {'ICL':>12} "
            f"{'log-lik':>12} {'params':>6} {'reached':>9} {'iter':>5} {'conv':>5}"
        )
        lines = [
            f"{self.title} selection by {self.criterion.upper()} (lower is better), "
            f"{self.n_samples} samples",
            header,
        ]
        for record in self.table:
            chosen = (int(record["n_components"]), str(record["covariance_type"])) == self.best_
            reached = f"{record['n_reached_best']}/{record['n_init']}"
            lines.append(
                f"{record['n_components']:>3} {record['covariance_type']:<10} "
                f"{record['bic']:>12.3f} {record['aic']:>12.3f} {record['icl']:>12.3f} "
                f"{record['log_likelihood']:>12.3f} {record['n_parameters']:>6} "
                f"{reached:>9} {record['n_iter']:>5} {str(bool(record['converged'])):>5}"
                + (" *" if chosen else "")
            )
        lines.append(f"Chosen: n_components={self.best_[0]}, covariance_type={self.best_[1]!r}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_string()

    def __repr__(self) -> str:
        return (
            f"Selection(criterion={self.criterion!r}, best_={self.best_!r}, "
            f"{len(self.table)} models)"
        )


def select(
    X,
    n_components=range(1, 10),
    covariance_type=COVARIANCE_TYPES,
    *,
    criterion: str = "bic",
    n_init: int = 1,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    max_iter: int = 100,
    init_params: str = "kmeans",
    random_state=None,
    accelerate=None,
) -> Selection:
    """Fit Gaussian mixtures of every component count and covariance type; pick one.

    Equivalent to fitting ``GaussianMixture(n_components=K, covariance_type=c,
    n_init=n_init, tol=tol, reg_covar=reg_covar, max_iter=max_iter,
    init_params=init_params, random_state=random_state, accelerate=accelerate)`` for
    every ``K`` and ``c``
    and scoring it on ``X``, but all counts of one covariance type, their restarts
    and their final E-steps run in one compiled program (:func:`jaxem.engine.fit_sweep`).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    n_components : int or iterable of int, default=range(1, 10)
        Component counts to try (sorted, duplicates dropped).
    covariance_type : str or iterable of str, default all four
        Among ``'full'``, ``'tied'``, ``'diag'``, ``'spherical'``.
    criterion : {'bic', 'aic', 'icl'}, default='bic'
        What to minimise. ``bic = -2 log L + p log n`` and ``aic = -2 log L + 2 p``
        as :meth:`GaussianMixture.bic` and :meth:`~GaussianMixture.aic`;
        ``icl = bic + 2 Σ_i Σ_k -r_ik log r_ik``, BIC plus twice the entropy of the
        responsibilities (Biernacki, Celeux and Govaert 2000, in BIC's lower-is-better
        sign): it penalises overlapping components. R's mclust reports the negatives
        (higher is better) and uses the hard assignments' ``log r`` for ICL.
    n_init, tol, reg_covar, max_iter, init_params, random_state, accelerate
        As :class:`jaxem.GaussianMixture` (``accelerate='squarem'``: SQUAREM in every
        restart of every model, the same table up to the tolerance's error). Every
        model draws its restarts from the same key, so with an int ``random_state``
        (or a ``RandomState``, from which one seed is drawn) each row is what that
        model's own fit with that seed gives.

    Returns
    -------
    Selection
        The table, ``best_``, ``estimator_`` (the chosen model, fitted) and every
        restart's summary.

    Raises
    ------
    ValueError
        An empty or non-positive ``n_components``, a count above the number of
        samples, an unknown covariance type or criterion, invalid estimator
        parameters (scikit-learn's messages), or every model failing.

    Notes
    -----
    A fit of ``GaussianMixture`` runs its best restart again on its own (so its
    result never depends on how many restarts ran beside it); the sweep keeps the
    batched run, so ``estimator_`` and the table equal separate fits up to the last
    bits of rounding (``tests/test_selection.py`` checks 1e-6 per sample).

    Examples
    --------
    >>> import numpy as np
    >>> import jaxem
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(0, 1, (100, 2)), rng.normal(8, 1, (100, 2))])
    >>> found = jaxem.select(X, n_components=[1, 2, 3], covariance_type="diag",
    ...                      n_init=2, random_state=0)
    >>> found.best_
    (2, 'diag')
    >>> found.table["bic"].argmin(), found.estimator_.means_.shape
    (np.int64(1), (2, 2))
    """
    counts = _check_counts(n_components)
    types = _check_types(covariance_type)
    criterion = _check_criterion(criterion)
    template = GaussianMixture(
        n_components=counts[-1],
        covariance_type=types[0],
        tol=tol,
        reg_covar=reg_covar,
        max_iter=max_iter,
        n_init=n_init,
        init_params=init_params,
        random_state=random_state,
        accelerate=accelerate,
    )
    template._validate_params()  # scikit-learn's messages for the shared parameters
    with _validation.precision(_validation.input_precision(X)):
        return _select(X, template, counts, types, criterion)


def _select(X_in, template, counts, types, criterion) -> Selection:
    X, dtype, offset = template._validate_fit_input(X_in, ensure_min_samples=2)
    n_samples, n_features = X.shape
    if counts[-1] > n_samples:
        raise ValueError(
            f"n_components up to {counts[-1]} needs at least that many samples; X has "
            f"{n_samples}. Drop the larger counts or pass more rows."
        )
    x = template._centred(X, offset, dtype)
    # One seed for every model: a loop of fits with an int random_state does the same.
    seed = _validation.random_seed(template.random_state)
    n_init, tol = int(template.n_init), float(template.tol)
    records, restarts, fits = [], {}, {}
    for covariance_type in types:
        estimator = clone(template).set_params(covariance_type=covariance_type)
        bucket = component_bucket(counts[-1], n_samples)
        model = estimator._build_model(counts[-1], bucket)
        sweep = engine.fit_sweep(
            model,
            x,
            {"n_active": np.asarray(counts, np.int32)},
            key=seed,
            n_restarts=n_init,
            max_iter=int(template.max_iter),
            tol=tol,
            outputs=("log_prob", "entropy"),
            accelerate=template.accelerate,
        )
        for index, n_components in enumerate(counts):
            fit = jax.tree.map(lambda leaf, i=index: leaf[i], sweep.fits)
            trimmed = estimator._build_model(n_components, bucket)
            n_parameters = int(trimmed.n_parameters(n_features))
            log_prob = np.asarray(sweep.outputs[0][index], np.float64)
            entropy = np.asarray(sweep.outputs[1][index], np.float64)
            record = _record(
                fit, log_prob, entropy, n_components, covariance_type, n_parameters, n_init, tol
            )
            records.append(record)
            summary = fit.restarts._replace(
                params=engine.per_restart(trimmed.trim, fit.restarts.params)
            )
            restarts[(n_components, covariance_type)] = summary
            fits[(n_components, covariance_type)] = (fit, trimmed)
    table = np.array(records, dtype=TABLE_DTYPE)
    scores = table[criterion]
    if not np.any(np.isfinite(scores)):
        raise ValueError(
            "Every model's restarts ended with non-finite log-likelihood or parameters. "
            "Try a larger reg_covar, fewer components, scaling the features, or float64 "
            "input."
        )
    chosen = table[int(np.argmin(np.where(np.isfinite(scores), scores, np.inf)))]
    best = (int(chosen["n_components"]), str(chosen["covariance_type"]))
    fit, trimmed = fits[best]
    estimator = _fitted_estimator(template, X_in, best, fit, trimmed, restarts[best], offset, dtype)
    return Selection(table, criterion, best, estimator, restarts, n_samples)


def _record(fit, log_prob, entropy, n_components, covariance_type, n_parameters, n_init, tol):
    """One row of the table from a model's best restart and its final E-step."""
    log_likelihood = float(np.sum(log_prob))
    usable = bool(fit.any_usable) and math.isfinite(log_likelihood)
    n_samples = log_prob.shape[0]
    if not usable:
        return (n_components, covariance_type, np.inf, np.inf, np.inf, -np.inf,
                n_parameters, 0, n_init, False, int(fit.n_iter))  # fmt: skip
    bic = -2.0 * log_likelihood + n_parameters * math.log(n_samples)
    aic = -2.0 * log_likelihood + 2.0 * n_parameters
    icl = bic + 2.0 * float(np.sum(entropy))
    finals = np.asarray(fit.restarts.log_likelihood, np.float64)
    ok = (np.asarray(fit.restarts.status) != engine.NON_FINITE) & np.isfinite(finals)
    # Restarts that stopped within EM's own tolerance of the best reached its optimum.
    margin = max(tol, 1e-9 * abs(float(fit.log_likelihood)))
    reached = int(np.sum(ok & (finals >= float(fit.log_likelihood) - margin)))
    converged = int(fit.status) == engine.CONVERGED
    return (n_components, covariance_type, bic, aic, icl, log_likelihood,
            n_parameters, reached, n_init, converged, int(fit.n_iter))  # fmt: skip


def _fitted_estimator(template, X_in, best, fit, trimmed, summary, offset, dtype):
    """The chosen model as a fitted GaussianMixture (no further compile)."""
    n_components, covariance_type = best
    estimator = clone(template).set_params(
        n_components=n_components, covariance_type=covariance_type
    )
    estimator._validate_fit_input(X_in, ensure_min_samples=2)  # n_features_in_, names
    estimator._set_fitted(trimmed.trim(fit.params), offset, dtype)
    n_iter = int(fit.n_iter)
    best_restart = int(fit.best_restart)
    estimator.converged_ = int(fit.status) == engine.CONVERGED
    estimator.n_iter_ = n_iter
    estimator.lower_bound_ = float(fit.log_likelihood)
    estimator.lower_bounds_ = [float(v) for v in np.asarray(summary.trace)[best_restart, :n_iter]]
    estimator.restarts_ = summary
    estimator.best_restart_ = best_restart
    if not estimator.converged_ and int(template.max_iter) > 0:
        warnings.warn(CONVERGENCE_MESSAGE, ConvergenceWarning, stacklevel=3)
    return estimator


def select_states(
    estimator,
    X,
    lengths=None,
    n_components=range(1, 7),
    covariance_type=None,
    *,
    criterion: str = "bic",
) -> Selection:
    """Fit an HMM estimator for every number of hidden states; pick one.

    Equivalent to ``clone(estimator).set_params(n_components=K).fit(X, lengths)``
    and its :meth:`~jaxem.GaussianHMM.bic` / :meth:`~jaxem.GaussianHMM.aic` for
    every ``K`` (and every ``covariance_type``, for a :class:`jaxem.GaussianHMM`):
    each model is one batched fit of all its ``n_init`` restarts. Unlike
    :func:`select`, the models are not one program: an HMM's states are not padded,
    so each state count compiles its own fit.

    Parameters
    ----------
    estimator : an unfitted (or fitted) jaxem HMM estimator
        The settings of every fit (``n_init``, ``n_iter``, ``tol``, ``random_state``,
        ``accelerate``, ...); its ``n_components`` (and ``covariance_type``) are
        replaced.
    X : array-like of shape (n_samples, n_features)
        All sequences concatenated, as the estimator's ``fit``.
    lengths : array-like of int, optional
        Length of every sequence; they must sum to ``n_samples``.
    n_components : int or iterable of int, default=range(1, 7)
        State counts to try (sorted, duplicates dropped).
    covariance_type : str or iterable of str, optional
        :class:`jaxem.GaussianHMM` only: covariance types to try (default: the
        estimator's own).
    criterion : {'bic', 'aic'}, default='bic'
        What to minimise, as the estimator's ``bic`` and ``aic`` (hmmlearn's:
        every free scalar counts). The table's ``icl`` is NaN: it would need the
        entropy of the posterior over state paths.

    Returns
    -------
    Selection
        The table (``covariance_type`` is ``'-'`` for emissions without one), the
        chosen model as ``best_``, the fitted estimator of that model as
        ``estimator_``, and every restart's summary.

    Raises
    ------
    TypeError
        If ``estimator`` is not a jaxem HMM estimator.
    ValueError
        Empty or non-positive state counts, more states than samples, an unknown
        covariance type or criterion (or ``covariance_type`` for an estimator
        without one), the estimator's own input errors, or every model failing.

    Examples
    --------
    >>> import numpy as np
    >>> import jaxem
    >>> truth = jaxem.GaussianHMM(n_components=2, init_params="")
    >>> truth.startprob_ = np.array([0.5, 0.5])
    >>> truth.transmat_ = np.array([[0.95, 0.05], [0.05, 0.95]])
    >>> truth.means_, truth.covars_ = np.array([[-3.0], [3.0]]), np.ones((2, 1))
    >>> X, _ = truth.sample(400, random_state=0)
    >>> found = jaxem.select_states(jaxem.GaussianHMM(n_init=2, random_state=0), X,
    ...                             n_components=[1, 2, 3])
    >>> found.best_
    (2, 'diag')
    """
    if not isinstance(estimator, _BaseHMM):
        raise TypeError(
            f"select_states needs a jaxem HMM estimator (GaussianHMM, CategoricalHMM, "
            f"PoissonHMM, ...), got {type(estimator).__name__}; for mixtures use "
            "jaxem.select."
        )
    counts = _check_counts(n_components)
    criterion = _check_criterion(criterion)
    if criterion == "icl":
        raise ValueError(
            "select_states cannot choose by 'icl' (it would need the entropy of the "
            "state paths); choose 'bic' or 'aic'."
        )
    has_types = "covariance_type" in estimator.get_params()
    if covariance_type is not None and not has_types:
        raise ValueError(
            f"{type(estimator).__name__} has no covariance_type; leave covariance_type=None."
        )
    if covariance_type is None:
        types = [estimator.get_params()["covariance_type"] if has_types else None]
    else:
        types = _check_types(covariance_type)
    n_samples = _num_samples(X)
    if counts[-1] > n_samples:
        raise ValueError(
            f"n_components up to {counts[-1]} states needs at least that many samples; X "
            f"has {n_samples}. Drop the larger counts or pass more rows."
        )
    n_sequences = 1 if lengths is None else len(lengths)
    records, restarts, fitted = [], {}, {}
    for covariance_type in types:
        for n_components in counts:
            changes = {"n_components": n_components}
            if covariance_type is not None:
                changes["covariance_type"] = covariance_type
            model = clone(estimator).set_params(**changes)
            name = covariance_type or "-"
            try:
                model.fit(X, lengths)
            except engine.AllRestartsFailed:
                records.append((n_components, name, np.inf, np.inf, np.nan, -np.inf, 0, 0,
                                int(model.n_init), False, 0))  # fmt: skip
                continue
            records.append(_state_record(model, X, lengths, n_sequences, name))
            restarts[(n_components, name)] = model.restarts_
            fitted[(n_components, name)] = model
    table = np.array(records, dtype=TABLE_DTYPE)
    scores = table[criterion]
    if not np.any(np.isfinite(scores)):
        raise ValueError(
            "Every model's restarts ended with non-finite log-likelihood or parameters. "
            "Try fewer states, scaling the features, or float64 input."
        )
    chosen = table[int(np.argmin(np.where(np.isfinite(scores), scores, np.inf)))]
    best = (int(chosen["n_components"]), str(chosen["covariance_type"]))
    return Selection(
        table, criterion, best, fitted[best], restarts, n_samples, type(estimator).__name__
    )


def _state_record(model, X, lengths, n_sequences, covariance_type):
    """One row of the table from a fitted HMM estimator."""
    log_likelihood = float(model.score(X, lengths))
    n_parameters = int(sum(model._n_fit_scalars_per_param().values()))
    n_samples = _num_samples(X)
    bic = -2.0 * log_likelihood + n_parameters * math.log(n_samples)
    aic = -2.0 * log_likelihood + 2.0 * n_parameters
    summary = model.restarts_
    finals = np.asarray(summary.log_likelihood, np.float64)
    best = finals[model.best_restart_]
    ok = (np.asarray(summary.status) != engine.NON_FINITE) & np.isfinite(finals)
    # The engine monitors the mean per sequence, against tol / n_sequences.
    margin = max(float(model.tol) / n_sequences, 1e-9 * abs(best))
    reached = int(np.sum(ok & (finals >= best - margin)))
    return (model.n_components, covariance_type, bic, aic, np.nan, log_likelihood,
            n_parameters, reached, int(model.n_init),
            int(summary.status[model.best_restart_]) == engine.CONVERGED,
            int(model.monitor_.iter))  # fmt: skip


# -- argument checks ---------------------------------------------------------------------------
def _check_counts(n_components) -> list[int]:
    values = [n_components] if isinstance(n_components, Integral) else n_components
    try:
        values = list(values)
    except TypeError:
        raise TypeError(
            f"n_components must be an int or an iterable of ints, got {n_components!r}."
        ) from None
    if not values:
        raise ValueError("n_components is empty; give at least one component count.")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
            raise ValueError(f"n_components must hold positive ints; got {value!r}.")
    return sorted({int(value) for value in values})


def _check_types(covariance_type) -> list[str]:
    values = [covariance_type] if isinstance(covariance_type, str) else list(covariance_type)
    if not values:
        raise ValueError(f"covariance_type is empty; give some of {COVARIANCE_TYPES}.")
    for value in values:
        if value not in COVARIANCE_TYPES:
            raise ValueError(f"Unknown covariance_type {value!r}; choose among {COVARIANCE_TYPES}.")
    return list(dict.fromkeys(values))


def _check_criterion(criterion) -> str:
    if criterion not in CRITERIA:
        raise ValueError(f"Unknown criterion {criterion!r}; choose among {CRITERIA}.")
    return criterion
