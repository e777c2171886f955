"""What every mixture estimator shares: fitting, prediction, scores and sampling.

:class:`MixtureEstimator` is scikit-learn's ``BaseMixture`` interface on
:class:`~jaxem.estimators._base.EMEstimator`: ``fit`` / ``fit_predict`` run all
``n_init`` initialisations as batched restarts of one :func:`jaxem.mixture` over
the subclass's family, keep the best, and store ``weights_``, ``converged_``,
``n_iter_``, ``lower_bound_`` and ``lower_bounds_``; ``predict``,
``predict_proba``, ``score_samples``, ``score``, ``bic``, ``aic`` and ``sample``
follow. MAP EM (``weights_prior``; a subclass may add a prior on its components
through :meth:`MixtureEstimator._with_priors`) and semi-supervised EM
(``semi_supervised`` with ``fit(X, y)``, or ``fit(X, component_prior=Q)``) live here
too. A subclass is its parameters, its family and its attribute map:

``_family()``
    The component family for the estimator's parameters (and, after a fit, the data).
``_set_components(layout, offset, dtype)``
    Fitted attributes from the family's :meth:`~jaxem.contract.Family.to_layout`.
``_component_layout()``
    The family's :meth:`~jaxem.contract.Family.from_layout` arguments from the attributes.
``_sample_components(rng, counts)``
    ``counts[k]`` draws from every component ``k`` with numpy's generator ``rng``.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from numbers import Real

import jax
import numpy as np
from sklearn.base import DensityMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions

from jaxem import engine
from jaxem.contract import ASSIGNMENTS, Status
from jaxem.estimators import _array_api, _validation
from jaxem.estimators._base import EMEstimator, in_fitted_precision, in_input_precision
from jaxem.models.mixture import LabelledRows, MixtureParams, mixture

__all__ = [
    "MixtureEstimator",
    "CONVERGENCE_MESSAGE",
    "PRIOR_CONSTRAINTS",
    "PRIOR_PARAMETERS",
    "ASSIGNMENT_CONSTRAINT",
]

#: Constraints of the MAP and semi-supervised parameters every mixture estimator takes.
PRIOR_CONSTRAINTS: dict = {
    "weights_prior": [Interval(Real, 1.0, None, closed="left")],
    "semi_supervised": ["boolean"],
}

#: Their documentation (numpydoc, indented as a class's Parameters entries).
PRIOR_PARAMETERS = """weights_prior : float >= 1, default=1.0
        jaxem extension, MAP EM: Dirichlet concentration ``α`` on the mixing
        weights, ``weights_ = (n_k + α - 1) / (n + K (α - 1))``; 1 is maximum
        likelihood. With ``α > 1``, ``lower_bound_`` and ``tol`` are about the log
        posterior per sample.
    semi_supervised : bool, default=False
        jaxem extension: if True, ``fit(X, y)`` uses ``y`` as labels (a component
        index per labelled row, -1 for unlabelled rows; see :meth:`fit`). False
        ignores ``y`` as scikit-learn does."""

#: Constraint of the ``assignment`` parameter every mixture estimator has.
ASSIGNMENT_CONSTRAINT = [StrOptions(set(ASSIGNMENTS))]

#: scikit-learn's warning when the kept initialisation did not converge.
CONVERGENCE_MESSAGE = (
    "Best performing initialization did not converge. "
    "Try different init parameters, or increase max_iter, "
    "tol, or check for degenerate data."
)


class MixtureEstimator(DensityMixin, EMEstimator):
    """A finite mixture fitted by batched EM, with scikit-learn's mixture interface."""

    _evaluation_outputs = ("predict", "predict_proba", "log_prob")
    #: Whether the data is centred before fitting (real-valued families only: counts,
    #: binary values and symbols must stay what they are).
    _centres_data = True

    # -- to be provided by subclasses -----------------------------------------------------
    def _family(self):
        raise NotImplementedError

    def _set_components(self, layout: dict, offset, dtype) -> None:
        raise NotImplementedError

    def _component_layout(self, offset) -> dict:
        raise NotImplementedError

    def _sample_components(self, rng, counts) -> np.ndarray:
        raise NotImplementedError

    def _check_support(self, X) -> None:
        """Raise ``ValueError`` if ``X`` lies outside the family's support."""
        self._family().check_data(X)

    def _fit_support(self, X) -> None:
        """In ``fit``: learn what the support depends on (categories), then check ``X``."""
        self._check_support(X)

    def _failed_fit_message(self, dtype, failure) -> str:
        """The message of the ``ValueError`` raised when every restart failed."""
        return (
            f"Fitting the {type(self).__name__} failed: every initialisation gave "
            f"non-finite parameters ({failure}). Try more initialisations (n_init), "
            "another init_params, fewer components, or float64 input."
        )

    # -- fitting ---------------------------------------------------------------------------
    @in_input_precision
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, component_prior=None):
        """Estimate the parameters with batched EM (``n_init`` restarts, best kept).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) of int, or None
            Ignored unless ``semi_supervised=True`` (so scikit-learn's ``fit(X, y)``
            stays unsupervised): then a component index for every labelled row and
            -1 for unlabelled ones. Labelled rows keep their component with
            probability one in every E-step, and seed the initialisation.
        component_prior : array-like of shape (n_samples, n_components), optional
            jaxem extension, the general form of ``y``: per-row prior probabilities
            ``q`` over the components (rows non-negative, summing to 1). The E-step's
            responsibilities are ``∝ q_nk π_k p_k(x_n)``; EM maximises
            ``Σ_n log Σ_k q_nk π_k p_k(x_n)`` (``y``'s unlabelled rows count as
            ``q = 1``: Nigam et al.'s semi-supervised log-likelihood), and
            ``lower_bound_`` reports it.

        Returns
        -------
        self
            The fitted estimator.

        Raises
        ------
        ValueError
            If ``y`` or ``component_prior`` has the wrong length or shape, a label
            outside ``[-1, n_components)``, or prior rows that are negative or do not
            sum to 1.

        Warns
        -----
        ConvergenceWarning
            If the best initialisation did not converge within ``max_iter`` (> 0).
        """
        self._fit(X, y, component_prior)
        return self

    @in_input_precision
    @_fit_context(prefer_skip_nested_validation=True)
    def fit_predict(self, X, y=None, *, component_prior=None):
        """Fit and return the component of every row of ``X``.

        Equal to ``fit(X).predict(X)``: the labels come from a final E-step with
        the fitted parameters. With labels (``y`` and ``semi_supervised=True``, or
        ``component_prior``) that E-step includes them, so labelled rows keep their
        component (``predict`` knows nothing of labels).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,), or None
            See :meth:`fit`.
        component_prior : array-like of shape (n_samples, n_components), optional
            See :meth:`fit`.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        return self._fit(X, y, component_prior)

    def _centre(self, X):
        if self._centres_data:
            return super()._centre(X)
        return np.zeros(X.shape[1])

    def _start(self, model, X, x, key, offset, dtype):
        """``(n_restarts, initial, max_iter, converged_at_first)`` of the fit: the
        previous solution with ``warm_start``, else ``n_init`` restarts of the
        model's own init (``initial`` None)."""
        max_iter = int(self.max_iter)
        if not (bool(self.warm_start) and hasattr(self, "converged_")):
            return int(self.n_init), None, max_iter, False
        self._check_warm_start(X.shape[1])
        initial = self._fitted_params(offset, dtype)
        converged_at_first = False
        if max_iter > 0:
            # scikit-learn compares the first lower bound with the previous fit's.
            first = np.mean(self._evaluate(X, "log_prob", params=initial))
            if abs(float(first) - float(self.lower_bound_)) < self.tol:
                max_iter, converged_at_first = 1, True
        return 1, model.pad(initial), max_iter, converged_at_first

    def _check_warm_start(self, n_features):
        if self._n_components_fitted() != int(self.n_components) or (
            int(self.n_features_in_) != n_features
        ):
            raise ValueError(
                "warm_start=True continues the previous fit, which has "
                f"{self._n_components_fitted()} components and {self.n_features_in_} "
                f"features; this fit has n_components={self.n_components} and "
                f"{n_features} features. Set warm_start=False to start afresh."
            )

    def _fit(self, X, y=None, component_prior=None):
        X, dtype, offset = self._validate_fit_input(X, ensure_min_samples=2)
        n_samples = X.shape[0]
        n_components = int(self.n_components)
        _validation.check_n_samples(n_samples, n_components)
        self._fit_support(X)
        log_prior = _row_log_prior(
            y if self.semi_supervised else None, component_prior, n_samples, n_components
        )

        x = self._centred(X, offset, dtype)
        model = self._with_priors(self._model_for(n_components, n_samples), X, offset)
        key = _validation.random_key(self.random_state)
        n_restarts, initial, max_iter, converged_at_first = self._start(
            model, X, x, key, offset, dtype
        )
        if log_prior is not None:  # the rows and their log prior over the components
            x = LabelledRows(x, _padded_columns(log_prior, model.max_components, dtype))

        start = time.perf_counter()
        try:
            result = self._engine_fit(
                model,
                x,
                key=key,
                n_restarts=n_restarts,
                max_iter=max_iter,
                tol=float(self.tol),
                init_params=initial,
                rerun_alone=True,
            )
        except engine.AllRestartsFailed as failure:
            raise ValueError(self._failed_fit_message(dtype, failure)) from failure
        elapsed = time.perf_counter() - start
        if self.verbose:
            self._print_trace(result, elapsed)

        n_iter = result.n_iter
        trace = self.restarts_.trace[result.best_restart]
        self._set_fitted(result.params, offset, dtype)
        self.converged_ = bool(result.converged or converged_at_first)
        self.n_iter_ = int(n_iter)
        self.lower_bound_ = float(result.log_likelihood)
        self.lower_bounds_ = [float(value) for value in trace[:n_iter]]
        if not self.converged_ and self.max_iter > 0 and self.assignment != "stochastic":
            warnings.warn(CONVERGENCE_MESSAGE, ConvergenceWarning, stacklevel=4)
        # Final E-step with the stored attributes, exactly as predict() computes it.
        if log_prior is None:
            return self._evaluate(X, "predict").astype(np.int64)
        labels = engine.evaluate(
            model, model.pad(self._fitted_params(offset, dtype)), x, ("predict",)
        )[0]
        return np.asarray(labels)[:n_samples].astype(np.int64)

    def _build_model(self, n_components, max_components):
        return mixture(
            self._family(),
            n_components,
            init=self.init_params,
            max_components=max_components,
            assignment=self.assignment,
        )

    def _with_priors(self, model, X, offset):
        """The fit's model with its MAP priors: the Dirichlet ``weights_prior`` here;
        subclasses add priors on the components (``X`` raw, ``offset`` the centring)."""
        del X, offset
        return dataclasses.replace(model, weights_prior=float(self.weights_prior))

    def _n_components_fitted(self):
        return int(np.shape(self.weights_)[0])

    # -- attributes <-> parameters ---------------------------------------------------------
    def _set_fitted(self, params, offset, dtype):
        """``weights_`` and the family's attributes, computed in float64 on the host."""
        log_weights = np.asarray(jax.device_get(params.log_weights), np.float64)
        self.weights_ = np.exp(log_weights).astype(dtype)
        # The layout in the fit's precision (its floors are that dtype's), then float64.
        layout = self._family().to_layout(params.components)
        layout = {name: np.asarray(value, np.float64) for name, value in layout.items()}
        self._set_components(layout, offset, dtype)
        self._fit_offset = np.asarray(offset, np.float64)

    def _fitted_params(self, offset, dtype):
        with np.errstate(divide="ignore"):  # a zero weight is allowed: log 0 = -inf
            log_weights = np.log(np.asarray(self.weights_, np.float64)).astype(dtype)
        components = self._family().from_layout(dtype, **self._component_layout(offset))
        return MixtureParams(log_weights, jax.tree.map(np.asarray, components))

    # -- evaluation ------------------------------------------------------------------------
    @in_fitted_precision
    def predict(self, X):
        """Most probable component of every row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        return self._evaluate(X, "predict").astype(np.int64)

    @in_fitted_precision
    def predict_proba(self, X):
        """Posterior probability of every component for every row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        resp : ndarray of shape (n_samples, n_components)
        """
        return self._evaluate(X, "predict_proba")[:, : self._n_components_fitted()]

    @in_fitted_precision
    def score_samples(self, X):
        """Log-likelihood of every row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        log_prob : ndarray of shape (n_samples,)
        """
        return self._evaluate(X, "log_prob")

    @in_fitted_precision
    def score(self, X, y=None):
        """Mean per-sample log-likelihood of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : Ignored

        Returns
        -------
        log_likelihood : float
        """
        return float(np.mean(self.score_samples(X), dtype=np.float64))

    @in_fitted_precision
    def bic(self, X):
        """Bayesian information criterion of the model on ``X`` (lower is better).

        Parameters
        ----------
        X : array of shape (n_samples, n_features)

        Returns
        -------
        bic : float
        """
        n_samples = np.shape(X)[0]
        return -2 * self.score(X) * n_samples + self._n_parameters() * math.log(n_samples)

    @in_fitted_precision
    def aic(self, X):
        """Akaike information criterion of the model on ``X`` (lower is better).

        Parameters
        ----------
        X : array of shape (n_samples, n_features)

        Returns
        -------
        aic : float
        """
        return -2 * self.score(X) * np.shape(X)[0] + 2 * self._n_parameters()

    def _evaluation_input(self, X, allow_nan=None):
        X, x, dtype, offset = super()._evaluation_input(X, allow_nan)
        self._check_support(X)
        return X, x, dtype, offset

    @_array_api.in_input_namespace
    def sample(self, n_samples=1):
        """Draw samples from the fitted mixture.

        Uses numpy's generator from ``check_random_state(random_state)``: the
        number of draws of every component is multinomial, as in scikit-learn.

        Parameters
        ----------
        n_samples : int, default=1

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
            Samples, grouped by component.
        y : ndarray of shape (n_samples,)
            Their components (int64).
        """
        _validation.check_fitted(self)
        if n_samples < 1:
            raise ValueError(
                f"Invalid value for 'n_samples': {n_samples} . The sampling requires at "
                "least one sample."
            )
        rng = check_random_state(self.random_state)
        weights = np.asarray(self.weights_, np.float64)
        counts = rng.multinomial(n_samples, weights / weights.sum())
        X = self._sample_components(rng, counts)
        y = np.concatenate(
            [np.full(int(count), k, dtype=np.int64) for k, count in enumerate(counts)]
        )
        return X.astype(np.asarray(self.weights_).dtype), y

    # -- verbose ---------------------------------------------------------------------------
    def _print_trace(self, result, elapsed):
        """scikit-learn's verbose lines, reconstructed from the batched run's trace."""
        trace = np.asarray(result.restarts.trace)
        n_iters = np.asarray(result.restarts.n_iter)
        statuses = np.asarray(result.restarts.status)
        for restart in range(trace.shape[0]):
            print(f"Initialization {restart}")
            previous = -np.inf
            for iteration in range(1, int(n_iters[restart]) + 1):
                value = trace[restart, iteration - 1]
                if iteration % self.verbose_interval == 0:
                    if self.verbose == 1:
                        print(f"  Iteration {iteration}")
                    else:
                        print(f"  Iteration {iteration}\t ll change {value - previous:.5f}")
                previous = value
            message = "converged" if statuses[restart] == Status.CONVERGED else "did not converge"
            if self.verbose == 1:
                print(f"Initialization {message}.")
            else:
                lower_bound = float(np.asarray(result.restarts.log_likelihood)[restart])
                print(f"Initialization {message}. lower bound {lower_bound:.5f}.")
        if self.verbose >= 2:
            print(f"All {trace.shape[0]} initializations, batched: time lapse {elapsed:.5f}s")


def _row_log_prior(
    y, component_prior, n_samples: int, n_components: int, prior_name: str = "component_prior"
):
    """``(n_samples, n_components)`` float64 log prior over the components of every row
    from ``y`` (labels, -1 unlabelled) or ``component_prior`` (probabilities, the
    parameter ``prior_name`` in messages), or None."""
    if y is not None and component_prior is not None:
        raise ValueError(f"Pass either labels y or {prior_name}, not both.")
    if y is not None:
        labels = np.asarray(y)
        if labels.ndim != 1 or labels.shape[0] != n_samples:
            raise ValueError(
                f"y must hold one label per row of X ({n_samples}), got shape {labels.shape}; "
                "use -1 for unlabelled rows."
            )
        if labels.dtype.kind not in "iuf" or not np.all(np.isfinite(labels)):
            raise ValueError(f"y must hold integer labels (-1 for unlabelled), got {labels.dtype}.")
        if labels.dtype.kind == "f" and not np.all(labels == np.round(labels)):
            raise ValueError("y must hold integer labels (-1 for unlabelled rows).")
        labels = labels.astype(np.int64)
        outside = (labels < -1) | (labels >= n_components)
        if np.any(outside):
            raise ValueError(
                f"y holds labels outside [-1, {n_components}) (for example "
                f"{labels[outside][0]}): a label is a component index below n_components="
                f"{n_components}, or -1 for an unlabelled row."
            )
        log_prior = np.where(np.arange(n_components) == labels[:, None], 0.0, -np.inf)
        return np.where(labels[:, None] < 0, 0.0, log_prior)
    if component_prior is None:
        return None
    prior = np.asarray(component_prior, np.float64)
    if prior.shape != (n_samples, n_components):
        raise ValueError(
            f"{prior_name} must have shape (n_samples, n_components) = "
            f"({n_samples}, {n_components}), got {prior.shape}."
        )
    if not np.all(np.isfinite(prior)) or np.any(prior < 0):
        raise ValueError(f"{prior_name} must hold finite, non-negative probabilities.")
    sums = prior.sum(axis=1)
    off = np.abs(sums - 1) > 1e-6
    if np.any(off):
        row = int(np.argmax(off))
        raise ValueError(
            f"Every row of {prior_name} must sum to 1; row {row} sums to {sums[row]:.6g}."
        )
    with np.errstate(divide="ignore"):  # a probability of 0 is allowed: log 0 = -inf
        return np.log(prior)


def _padded_columns(log_prior, n_columns: int, dtype):
    """``log_prior`` with padding components' columns (0: their weight is 0 anyway)."""
    return np.pad(log_prior, ((0, 0), (0, n_columns - log_prior.shape[1]))).astype(dtype)
