"""``jaxem.RegressionMixture`` (mixtures of linear regressions, R's flexmix) and
``jaxem.MixtureOfExperts`` (the weights a softmax of ``x``), in scikit-learn's style,
over the :func:`jaxem.regression_mixture` model.

``fit(X, y)`` takes a scalar response per row. Inputs are centred on their mean
for the fit (the normal equations then keep their digits in float32); the fitted
attributes are in the caller's coordinates.
"""

from __future__ import annotations

import dataclasses
import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_array
from sklearn.utils._param_validation import Interval, StrOptions

from jaxem import engine
from jaxem.contract import Status
from jaxem.estimators import _validation
from jaxem.estimators._base import EMEstimator, _host, in_fitted_precision, in_input_precision
from jaxem.models.regression_mixture import (
    REGRESSION_INITS,
    RegressionMixtureModel,
    RegressionMixtureParams,
    RegressionRows,
)

__all__ = ["RegressionMixture", "MixtureOfExperts"]


class RegressionMixture(EMEstimator):
    """Mixture of linear regressions fitted by batched EM.

    ``y | x ~ Σₖ weights_[k] N(x coef_[k] + intercept_[k], variances_[k])``: each
    row's response comes from one of ``n_components`` regression lines, which one
    unobserved (flexmix's model). :class:`MixtureOfExperts` lets the weights depend
    on ``x``.

    Parameters
    ----------
    n_components : int, default=2
        Number of regression lines.
    tol : float, default=1e-5
        Stop a restart when the mean per-row log-likelihood changes by less. Lower
        than a Gaussian mixture's 1e-3 (flexmix stops at a relative change of 1e-6):
        from a random partition every line starts near the pooled fit, where the
        log-likelihood first moves slowly (measured: with 1e-3, three of four
        restarts on two crossing lines stopped after two iterations there).
    reg : float, default=1e-6
        Ridge added to the diagonal of every line's weighted normal equations (the
        inputs centred, the weights rescaled to sum to the number of rows) and floor
        added to every noise variance, as ``reg_covar``: lines with few or collinear
        rows stay finite.
    max_iter : int, default=100
        EM iterations per restart.
    n_init : int, default=1
        Restarts, run batched in one compiled program; the highest likelihood wins.
    init_params : {"random", "kmeans", "k-means++"}, default="random"
        Initial responsibilities: every row to a uniformly drawn line (flexmix's
        random partition), or one-hot on k-means clusters of the points ``(x, y)``
        (with Lloyd's iterations, or the k-means++ seeds alone); then one M-step.
        k-means groups rows by place, which cuts crossing lines across: prefer
        "random" with several restarts there. Ignored when ``coef_init`` is given.
    coef_init, intercept_init : array-like of shape (n_components, n_features) and
        (n_components,), default=None
        Initial lines (both or neither); every restart starts there.
    variances_init : array-like of shape (n_components,), default=None
        Initial noise variances with ``coef_init``; default the variance of ``y``.
    weights_init : array-like of shape (n_components,), default=None
        Initial weights with ``coef_init``; default uniform.
    random_state : int, RandomState instance or None, default=None
        Seeds the inits of all restarts.

    Attributes
    ----------
    coef_ : ndarray of shape (n_components, n_features)
    intercept_ : ndarray of shape (n_components,)
    variances_ : ndarray of shape (n_components,)
        Noise variance of every line.
    weights_ : ndarray of shape (n_components,)
        Mixing weights (for :class:`MixtureOfExperts`, the gate's average over the
        training rows).
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
        Mean per-row log-likelihood ``log p(y | x)`` of the kept restart's last
        E-step, as :class:`sklearn.mixture.GaussianMixture`.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
    restarts_, best_restart_ :
        Every restart's outcome and the one kept.

    Notes
    -----
    Float32 input is fitted and returned in float32, float64 (and integer) input in
    float64. ``score`` is the mean log-likelihood (as a mixture's), not R².

    Examples
    --------
    >>> import numpy as np
    >>> from jaxem import RegressionMixture
    >>> rng = np.random.default_rng(0)
    >>> X = rng.uniform(-1, 1, (400, 1))
    >>> line = rng.integers(2, size=400)
    >>> y = np.where(line == 0, 3 * X[:, 0], 1 - 3 * X[:, 0]) + 0.05 * rng.normal(size=400)
    >>> rm = RegressionMixture(2, n_init=4, random_state=0).fit(X, y)
    >>> print(np.sort(rm.coef_[:, 0]).round(1))
    [-3.  3.]
    >>> agreement = np.mean(rm.predict_proba(X, y).argmax(axis=1) == line)
    >>> bool(max(agreement, 1 - agreement) > 0.95)  # the lines' numbering is arbitrary
    True
    """

    _gate = "constant"
    _precision_attribute = "coef_"

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0.0, None, closed="left")],
        "reg": [Interval(Real, 0.0, None, closed="left")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "init_params": [StrOptions(set(REGRESSION_INITS))],
        "coef_init": ["array-like", None],
        "intercept_init": ["array-like", None],
        "variances_init": ["array-like", None],
        "weights_init": ["array-like", None],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        n_components=2,
        *,
        tol=1e-5,
        reg=1e-6,
        max_iter=100,
        n_init=1,
        init_params="random",
        coef_init=None,
        intercept_init=None,
        variances_init=None,
        weights_init=None,
        random_state=None,
    ):
        self.n_components = n_components
        self.tol = tol
        self.reg = reg
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.coef_init = coef_init
        self.intercept_init = intercept_init
        self.variances_init = variances_init
        self.weights_init = weights_init
        self.random_state = random_state

    # -- fitting ---------------------------------------------------------------------------
    @in_input_precision
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Fit the mixture by EM.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            One finite response per row.

        Returns
        -------
        self

        Warns
        -----
        ConvergenceWarning
            If the kept restart reached ``max_iter`` before converging.
        """
        X = _validation.check_data(self, X, reset=True)
        y = _check_response(y, X.shape[0])
        dtype = _validation.compute_dtype(X.dtype)
        n_samples = X.shape[0]
        _validation.check_n_samples(n_samples, int(self.n_components))
        offset = X.mean(axis=0, dtype=np.float64)
        rows = RegressionRows(self._centred(X, offset, dtype), np.asarray(y, dtype))
        model = self._build_model(int(self.n_components), int(self.n_components))
        start = self._given_start(offset, np.var(y), dtype)
        try:
            result = self._engine_fit(
                model,
                rows,
                key=_validation.random_key(self.random_state),
                n_restarts=int(self.n_init),
                max_iter=int(self.max_iter),
                tol=float(self.tol),
                init_params=start,
                rerun_alone=True,
            )
        except engine.AllRestartsFailed as error:
            raise engine.AllRestartsFailed(
                f"All {self.n_init} restarts of {type(self).__name__} ended with non-finite "
                "parameters or log-likelihood. Try a larger reg, fewer components, "
                "scaling X and y, or float64 input.",
                error.restarts,
            ) from None
        status = Status(int(result.restarts.status[result.best_restart]))
        self.converged_ = status == Status.CONVERGED
        if status == Status.MAX_ITER and self.max_iter > 0:
            warnings.warn(
                f"Best restart of {type(self).__name__} did not converge after "
                f"{self.max_iter} iterations. Try a larger max_iter, a larger tol or "
                "other initial parameters.",
                ConvergenceWarning,
                stacklevel=3,
            )
        self._fit_offset = offset
        self._set_fitted(_host(result.params), offset, dtype)
        if self._gate != "constant":  # the gate's average over the training rows
            gate = self._evaluate_rows(X, None, "gate_proba")
            self.weights_ = np.mean(gate, axis=0, dtype=np.float64).astype(dtype)
        self.n_iter_ = int(result.n_iter)
        self.lower_bound_ = float(result.log_likelihood)
        return self

    def _given_start(self, offset, y_variance, dtype):
        """Parameters from ``coef_init`` and the like (centred inputs), or None."""
        given = (self.coef_init, self.intercept_init, self.variances_init, self.weights_init)
        if self.coef_init is None and self.intercept_init is None:
            if any(value is not None for value in given[2:]):
                raise ValueError(
                    "variances_init and weights_init need coef_init and intercept_init: "
                    "give the initial lines too, or none of them."
                )
            return None
        if self.coef_init is None or self.intercept_init is None:
            raise ValueError("coef_init and intercept_init go together: give both or neither.")
        k, d = int(self.n_components), offset.shape[0]
        coef = _checked(self.coef_init, (k, d), "coef_init")
        intercept = _checked(self.intercept_init, (k,), "intercept_init")
        variances = np.full(k, max(float(y_variance), 1e-12))
        if self.variances_init is not None:
            variances = _checked(self.variances_init, (k,), "variances_init", positive=True)
        weights = np.full(k, 1.0 / k)
        if self.weights_init is not None:
            weights = _checked(self.weights_init, (k,), "weights_init", positive=True)
            if not np.isclose(weights.sum(), 1.0):
                raise ValueError(f"weights_init must sum to 1, got {weights.sum():.6f}.")
        params = RegressionMixtureParams(
            log_weights=np.log(weights),
            gate_coef=np.zeros((k, d)),
            coef=coef,
            intercept=intercept + coef @ offset,
            variances=variances,
        )
        return RegressionMixtureParams(*(np.asarray(leaf, dtype) for leaf in params))

    # -- the base's hooks --------------------------------------------------------------------
    def _build_model(self, n_components, max_components):
        del max_components  # lines are not padded
        return RegressionMixtureModel(
            int(n_components),
            gate=self._gate,
            init_method=self.init_params,
            reg=float(self.reg),
        )

    def _model_for(self, n_components, n_rows):
        return self._build_model(n_components, n_components)

    def _n_components_fitted(self):
        return int(np.shape(self.intercept_)[0])

    def _set_fitted(self, params, offset, dtype):
        coef = np.asarray(params.coef, np.float64)
        self.coef_ = coef.astype(dtype)
        # The fit's inputs were x - offset: x coef + (b - offset coef) in the caller's.
        self.intercept_ = (np.asarray(params.intercept, np.float64) - coef @ offset).astype(dtype)
        self.variances_ = np.asarray(params.variances, dtype)
        log_weights = np.asarray(params.log_weights, np.float64)
        if self._gate == "constant":
            self.weights_ = np.exp(log_weights - np.logaddexp.reduce(log_weights)).astype(dtype)
        else:
            gate_coef = np.asarray(params.gate_coef, np.float64)
            self.gate_coef_ = gate_coef.astype(dtype)
            self.gate_intercept_ = (log_weights - gate_coef @ offset).astype(dtype)

    def _fitted_params(self, offset, dtype):
        coef = np.asarray(self.coef_, np.float64)
        k = coef.shape[0]
        if self._gate == "constant":
            log_weights = np.log(np.asarray(self.weights_, np.float64))
            gate_coef = np.zeros_like(coef)
        else:
            gate_coef = np.asarray(self.gate_coef_, np.float64)
            log_weights = np.asarray(self.gate_intercept_, np.float64) + gate_coef @ offset
        params = RegressionMixtureParams(
            log_weights=log_weights.reshape(k),
            gate_coef=gate_coef,
            coef=coef,
            intercept=np.asarray(self.intercept_, np.float64) + coef @ offset,
            variances=np.asarray(self.variances_, np.float64),
        )
        return RegressionMixtureParams(*(np.asarray(leaf, dtype) for leaf in params))

    def _n_parameters(self) -> int:
        return int(self._build_model(self._n_components_fitted(), 0).n_parameters(
            int(self.n_features_in_)
        ))  # fmt: skip

    # -- evaluation ------------------------------------------------------------------------
    def _evaluate_rows(self, X, y, output):
        """``output`` of the fitted model on rows ``X`` (and responses ``y``; None
        for the outputs that do not read them)."""
        _validation.check_fitted(self)
        X = _validation.check_data(self, X, reset=False)
        y = np.zeros(X.shape[0]) if y is None else _check_response(y, X.shape[0])
        dtype = self._fitted_dtype()
        offset = self._offset(X.shape[1])
        rows = RegressionRows(self._centred(X, offset, dtype), np.asarray(y, dtype))
        model = self._build_model(self._n_components_fitted(), 0)
        params = self._fitted_params(offset, dtype)
        return _host(engine.evaluate(model, params, rows, output))

    @in_fitted_precision
    def predict(self, X):
        """Expected response ``E[y | x] = Σₖ p(k | x) (x coef_[k] + intercept_[k])``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y_mean : ndarray of shape (n_samples,)
        """
        return self._evaluate_rows(X, None, "predict")

    @in_fitted_precision
    def predict_proba(self, X, y=None):
        """Posterior probability of every line given ``x`` and ``y``; without ``y``,
        the mixing probabilities given ``x`` alone (``weights_`` on every row, or the
        gate of a mixture of experts).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,), default=None

        Returns
        -------
        proba : ndarray of shape (n_samples, n_components)
        """
        return self._evaluate_rows(X, y, "gate_proba" if y is None else "predict_proba")

    @in_fitted_precision
    def score_samples(self, X, y):
        """Log-likelihood ``log p(y | x)`` of every row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        log_prob : ndarray of shape (n_samples,)
        """
        return self._evaluate_rows(X, y, "log_prob")

    @in_fitted_precision
    def score(self, X, y):
        """Mean per-row log-likelihood ``log p(y | x)`` (not R²).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        log_likelihood : float
        """
        return float(np.mean(self.score_samples(X, y), dtype=np.float64))

    def bic(self, X, y):
        """Bayesian information criterion on ``(X, y)``; lower is better.

        Returns
        -------
        bic : float
        """
        n_samples = np.shape(X)[0]
        return -2 * self.score(X, y) * n_samples + self._n_parameters() * np.log(n_samples)

    def aic(self, X, y):
        """Akaike information criterion on ``(X, y)``; lower is better.

        Returns
        -------
        aic : float
        """
        return -2 * self.score(X, y) * np.shape(X)[0] + 2 * self._n_parameters()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags


class MixtureOfExperts(RegressionMixture):
    """Mixture of linear experts: :class:`RegressionMixture` whose weights are a
    softmax of a linear function of ``x`` (Jacobs, Jordan, Nowlan and Hinton 1991).

    ``p(k | x) = softmax(gate_intercept_ + x gate_coef_ᵀ)ₖ``. EM fits the experts in
    closed form and the gate by one step per iteration on Böhning's quadratic
    lower bound (a generalised EM step: the log-likelihood never decreases); see
    :mod:`jaxem.models.regression_mixture`. Same parameters, methods and attributes
    as :class:`RegressionMixture`, plus the gate's.

    Parameters
    ----------
    n_components, tol, reg, max_iter, n_init, init_params, coef_init, intercept_init, \
variances_init, weights_init, random_state :
        As in :class:`RegressionMixture` (``weights_init``: the gate's initial
        probabilities, the same for every row).
    gate_reg : float, default=0.0
        Penalty ``gate_reg / 2 · |gate_coef_|²`` on the summed log-likelihood (a
        Gaussian prior on the gate's slopes: MAP EM, still monotone). Where the
        experts' regions are perfectly separated the gate's likelihood has no finite
        maximum and its slopes grow until ``max_iter``; a penalty gives it one.

    Attributes
    ----------
    gate_coef_ : ndarray of shape (n_components, n_features)
    gate_intercept_ : ndarray of shape (n_components,)
        Gate logits (defined up to a common shift: centred over components).
    weights_ : ndarray of shape (n_components,)
        The gate's average over the training rows.

    Examples
    --------
    >>> import numpy as np
    >>> from jaxem import MixtureOfExperts
    >>> rng = np.random.default_rng(0)
    >>> X = rng.uniform(-2, 2, (400, 1))
    >>> left = rng.uniform(size=400) < 1 / (1 + np.exp(3 * X[:, 0]))  # mostly x < 0
    >>> y = np.where(left, 2 * X[:, 0], -X[:, 0]) + 0.1 * rng.normal(size=400)
    >>> moe = MixtureOfExperts(2, n_init=4, random_state=0).fit(X, y)
    >>> moe.predict([[-1.0], [1.0]]).round(1)
    array([-2. , -0.9])

    Where the regions are perfectly separated the gate's likelihood has no finite
    maximum: its slopes grow without end, slowly, until ``max_iter``, unless
    ``gate_reg > 0``.
    """

    _gate = "softmax"

    _parameter_constraints: dict = {
        **RegressionMixture._parameter_constraints,
        "gate_reg": [Interval(Real, 0.0, None, closed="left")],
    }

    def __init__(
        self,
        n_components=2,
        *,
        tol=1e-5,
        reg=1e-6,
        gate_reg=0.0,
        max_iter=100,
        n_init=1,
        init_params="random",
        coef_init=None,
        intercept_init=None,
        variances_init=None,
        weights_init=None,
        random_state=None,
    ):
        super().__init__(
            n_components,
            tol=tol,
            reg=reg,
            max_iter=max_iter,
            n_init=n_init,
            init_params=init_params,
            coef_init=coef_init,
            intercept_init=intercept_init,
            variances_init=variances_init,
            weights_init=weights_init,
            random_state=random_state,
        )
        self.gate_reg = gate_reg

    def _build_model(self, n_components, max_components):
        model = super()._build_model(n_components, max_components)
        return dataclasses.replace(model, gate_reg=float(self.gate_reg))


def _check_response(y, n_samples: int) -> np.ndarray:
    """``y`` as a finite float64 vector of ``n_samples`` entries, or a ValueError that
    says what is wrong."""
    if y is None:
        raise ValueError(
            "This estimator requires y to be passed, but the target y is None: give one "
            "response per row of X."
        )
    y = check_array(y, ensure_2d=False, dtype=np.float64, input_name="y", ensure_min_samples=0)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(
            f"y must be 1-D (one response per row), got shape {y.shape}: fit one model "
            "per response column."
        )
    if y.shape[0] != n_samples:
        raise ValueError(
            f"y has {y.shape[0]} entries but X has {n_samples} rows: give one response "
            "per row of X."
        )
    return y


def _checked(value, shape, name, *, positive=False):
    """``value`` as a float64 array of ``shape``, finite (and positive)."""
    array = np.asarray(value, np.float64)
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}.")
    if not np.all(np.isfinite(array)) or (positive and not np.all(array > 0)):
        kind = "finite, positive" if positive else "finite"
        raise ValueError(f"{name} must hold {kind} values.")
    return array
