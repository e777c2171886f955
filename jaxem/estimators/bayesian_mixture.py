"""``jaxem.BayesianGaussianMixture``: a drop-in for scikit-learn's
:class:`sklearn.mixture.BayesianGaussianMixture`.

Variational EM on a :func:`jaxem.bayesian_mixture` over a :func:`jaxem.gaussian`
family, with all ``n_init`` initialisations run as batched restarts of one compiled
program; the priors and posteriors are scikit-learn's, attribute for attribute.
"""

from __future__ import annotations

from numbers import Integral, Real

import jax
import numpy as np
from sklearn.utils import check_array
from sklearn.utils._param_validation import Interval, StrOptions

from jaxem import engine
from jaxem.estimators import _validation
from jaxem.estimators._mixture import MixtureEstimator
from jaxem.estimators.gaussian_mixture import set_gaussian_attributes
from jaxem.families.gaussian import COVARIANCE_TYPES, Gaussian, GaussianParams, gaussian
from jaxem.models.mixture import (
    INIT_METHODS,
    WEIGHT_PRIOR_TYPES,
    BayesianMixtureParams,
    bayesian_mixture,
)

__all__ = ["BayesianGaussianMixture"]


class BayesianGaussianMixture(MixtureEstimator):
    """Variational Bayesian Gaussian mixture fitted by batched variational EM; a
    drop-in for scikit-learn's.

    Same parameters, defaults, fitted attributes, methods and error messages as
    :class:`sklearn.mixture.BayesianGaussianMixture`: a Dirichlet distribution or a
    stick-breaking Dirichlet process over the weights, Gaussian posteriors of the
    means and Wishart posteriors of the precisions, for all four covariance types.
    The ``n_init`` initialisations run at once as batched restarts, and the one with
    the highest lower bound is kept.

    Parameters
    ----------
    n_components : int, default=1
        Upper bound of the number of components; the posterior may leave some
        with (almost) no weight.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}, default='full'
    tol : float, default=1e-3
        Iterations stop when the lower bound (a total over the rows, as in
        scikit-learn) changes by less than ``tol``.
    reg_covar : float, default=1e-6
        Non-negative regularisation added to the diagonal of the data covariances.
    max_iter : int, default=100
    n_init : int, default=1
        Initialisations, run as batched restarts.
    init_params : {'kmeans', 'k-means++', 'random', 'random_from_data'}, \
default='kmeans'
        Initial responsibilities, as in :class:`jaxem.GaussianMixture`.
    weight_concentration_prior_type : {'dirichlet_process', \
'dirichlet_distribution'}, default='dirichlet_process'
    weight_concentration_prior : float > 0, default=None
        ``γ``; None: ``1 / n_components``.
    mean_precision_prior : float > 0, default=None
        ``β₀``; None: 1.
    mean_prior : array-like of shape (n_features,), default=None
        ``m₀``; None: the mean of ``X``.
    degrees_of_freedom_prior : float > n_features - 1, default=None
        ``ν₀``; None: ``n_features``.
    covariance_prior : float or array-like, default=None
        ``W₀⁻¹``: ``(n_features, n_features)`` full and tied, ``(n_features,)``
        diag, a float spherical; None: the covariance of ``X`` in that layout.
    random_state : int, RandomState instance or None, default=None
    warm_start : bool, default=False
        If True, each fit after the first starts from the previous posterior.
    verbose : int, default=0
    verbose_interval : int, default=10

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
        Posterior mean weights.
    means_ : ndarray of shape (n_components, n_features)
    covariances_, precisions_, precisions_cholesky_ : ndarray
        Covariance estimates (the Wishart scale normalised by the degrees of
        freedom), their inverses and factors, in the covariance type's layout.
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
        Lower bound of the best initialisation (scikit-learn's, a total).
    lower_bounds_ : list of float
        The lower bound at every iteration of the best initialisation.
    weight_concentration_prior_ : float
    weight_concentration_ : ndarray of shape (n_components,), or a tuple of two
        such arrays (the Beta parameters of the Dirichlet process).
    mean_precision_prior_ : float
    mean_precision_ : ndarray of shape (n_components,)
    mean_prior_ : ndarray of shape (n_features,)
    degrees_of_freedom_prior_ : float
    degrees_of_freedom_ : ndarray of shape (n_components,), or a float (tied)
    covariance_prior_ : float or ndarray
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)

    Notes
    -----
    Precision follows ``X`` (float64 and integers in float64, float32 in float32)
    as in :class:`jaxem.GaussianMixture`. Random initialisations use JAX's random
    generator, so for a given ``random_state`` they differ from scikit-learn's;
    from the same initial responsibilities the fits agree. With ``warm_start``
    a continued fit compares its first iteration's bound with the previous fit's,
    as scikit-learn does; that iteration then runs twice (once for the test).

    Examples
    --------
    >>> import numpy as np
    >>> from jaxem import BayesianGaussianMixture
    >>> X = np.array([[1, 2], [1, 4], [1, 0], [4, 2], [12, 4], [10, 7]])
    >>> bgm = BayesianGaussianMixture(n_components=2, random_state=42).fit(X)
    >>> print(np.sort(bgm.means_, axis=0).round(1))  # scikit-learn's too
    [[2.5 2.3]
     [8.5 4.5]]
    >>> bgm.predict([[0, 0], [9, 3]]) == bgm.predict([[1, 2], [12, 4]])
    array([ True,  True])
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "covariance_type": [StrOptions(set(COVARIANCE_TYPES))],
        "tol": [Interval(Real, 0.0, None, closed="left")],
        "reg_covar": [Interval(Real, 0.0, None, closed="left")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "init_params": [StrOptions(set(INIT_METHODS))],
        "weight_concentration_prior_type": [StrOptions(set(WEIGHT_PRIOR_TYPES))],
        "weight_concentration_prior": [None, Interval(Real, 0.0, None, closed="neither")],
        "mean_precision_prior": [None, Interval(Real, 0.0, None, closed="neither")],
        "mean_prior": [None, "array-like"],
        "degrees_of_freedom_prior": [None, Interval(Real, 0.0, None, closed="neither")],
        "covariance_prior": [None, "array-like", Interval(Real, 0.0, None, closed="neither")],
        "random_state": ["random_state"],
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
        "verbose_interval": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        *,
        n_components=1,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weight_concentration_prior_type="dirichlet_process",
        weight_concentration_prior=None,
        mean_precision_prior=None,
        mean_prior=None,
        degrees_of_freedom_prior=None,
        covariance_prior=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weight_concentration_prior_type = weight_concentration_prior_type
        self.weight_concentration_prior = weight_concentration_prior
        self.mean_precision_prior = mean_precision_prior
        self.mean_prior = mean_prior
        self.degrees_of_freedom_prior = degrees_of_freedom_prior
        self.covariance_prior = covariance_prior
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval

    # The mixture base's jaxem extensions that variational Bayes does not take: its
    # prior on the weights is weight_concentration_prior, and its E-step is soft.
    semi_supervised = False
    weights_prior = 1.0
    assignment = "soft"

    def _fit(self, X, y=None, component_prior=None):
        if component_prior is not None:
            raise ValueError(
                "BayesianGaussianMixture takes no component_prior: semi-supervised fits "
                "are EM's (jaxem.GaussianMixture(semi_supervised=True))."
            )
        return super()._fit(X, y)

    # -- priors (scikit-learn's _check_parameters) ------------------------------------------
    def _fit_support(self, X) -> None:
        """Check ``X`` and set the priors' attributes from the parameters and ``X``."""
        super()._fit_support(X)
        self._check_parameters(X)

    def _check_parameters(self, X) -> None:
        """The priors' attributes (``*_prior_``) from the parameters and ``X``, with
        scikit-learn's messages (the name of scikit-learn's private step, which code
        written for it calls)."""
        X = np.asarray(X)
        n_features = X.shape[1]
        family = self._family()
        prior = self.weight_concentration_prior
        self.weight_concentration_prior_ = 1.0 / self.n_components if prior is None else prior
        precision = self.mean_precision_prior
        self.mean_precision_prior_ = 1.0 if precision is None else precision
        if self.mean_prior is None:
            self.mean_prior_ = X.mean(axis=0)
        else:
            self.mean_prior_ = check_array(
                self.mean_prior, dtype=[np.float64, np.float32], ensure_2d=False
            )
            if self.mean_prior_.shape != (n_features,):
                raise ValueError(
                    f"The parameter 'means' should have the shape of {(n_features,)}, "
                    f"but got {self.mean_prior_.shape}"
                )
        dof = self.degrees_of_freedom_prior
        if dof is None:
            self.degrees_of_freedom_prior_ = n_features
        elif dof > n_features - 1.0:
            self.degrees_of_freedom_prior_ = dof
        else:
            raise ValueError(
                "The parameter 'degrees_of_freedom_prior' should be greater than "
                f"{n_features - 1}, but got {dof:.3f}."
            )
        prior = self.covariance_prior
        if prior is None:
            self.covariance_prior_ = family.default_covariance_prior(X)
        else:
            if np.ndim(prior) > 0:
                prior = check_array(prior, dtype=[np.float64, np.float32], ensure_2d=False)
            self.covariance_prior_ = family.check_covariance_prior(prior, n_features)
        # The priors live in the fit's centred coordinates.
        self._prior_offset = np.asarray(self._centre(X), np.float64)

    def _family(self) -> Gaussian:
        return gaussian(self.covariance_type, float(self.reg_covar), exact=True)

    def _build_model(self, n_components, max_components):
        offset = getattr(self, "_prior_offset", None)
        if offset is None:
            offset = self._offset(int(self.n_features_in_))
        return bayesian_mixture(
            self._family(),
            n_components,
            init=self.init_params,
            weight_concentration_prior_type=self.weight_concentration_prior_type,
            weight_concentration_prior=float(self.weight_concentration_prior_),
            mean_precision_prior=float(self.mean_precision_prior_),
            mean_prior=np.asarray(self.mean_prior_, np.float64) - offset,
            degrees_of_freedom_prior=float(self.degrees_of_freedom_prior_),
            covariance_prior=np.asarray(self.covariance_prior_, np.float64),
            max_components=max_components,
        )

    def _initialize_parameters(self, X, random_state) -> None:
        """The initial posterior of one initialisation (``init_params``, seeded by
        ``random_state``) as the fitted attributes: scikit-learn's private step,
        mirrored for code that calls it after :meth:`_check_parameters`."""
        X = np.asarray(X)
        with _validation.precision(_validation.input_precision(X)):
            dtype = _validation.compute_dtype(X.dtype)
            offset = self._centre(X)
            self._check_parameters(X)
            model = self._model_for(int(self.n_components), X.shape[0])
            key = _validation.random_key(random_state)
            x = self._centred(X, offset, dtype)
            params = self._initial_params(model, x, key=key, n_restarts=1)
            first = jax.tree.map(lambda leaf: np.asarray(leaf)[0], jax.device_get(params))
            self._set_fitted(model.trim(first), offset, dtype)

    def _start(self, model, X, x, key, offset, dtype):
        """The previous posterior with ``warm_start``, else ``n_init`` restarts.

        As scikit-learn, a continued fit whose first iteration's bound is within
        ``tol`` of the previous fit's has converged (that iteration is run once more
        here: the bound needs an E-step and an M-step)."""
        max_iter = int(self.max_iter)
        if not (bool(self.warm_start) and hasattr(self, "converged_")):
            return int(self.n_init), None, max_iter, False
        self._check_warm_start(X.shape[1])
        initial = model.pad(self._fitted_params(offset, dtype))
        if max_iter > 0:
            try:
                first = engine.fit(model, x, key=key, init_params=initial, max_iter=1, tol=0.0)
            except engine.AllRestartsFailed:  # the fit itself reports it
                return 1, initial, max_iter, False
            if abs(float(first.log_likelihood) - float(self.lower_bound_)) < self.tol:
                return 1, initial, 1, True
        return 1, initial, max_iter, False

    # -- attributes <-> parameters ---------------------------------------------------------
    def _set_fitted(self, params, offset, dtype):
        """scikit-learn's attributes from the posterior, computed in float64."""
        params = jax.tree.map(lambda leaf: np.asarray(leaf, np.float64), jax.device_get(params))
        n_components = params.log_weights.shape[0]
        model = self._build_model(n_components, n_components)
        family = self._family()
        self.weights_ = np.asarray(model.weights(params), np.float64).astype(dtype)
        means, chol = params.components
        set_gaussian_attributes(self, family, means, chol, offset, dtype)
        self.mean_precision_ = params.mean_precision.astype(dtype)
        self.degrees_of_freedom_ = family.degrees_of_freedom_layout(
            params.degrees_of_freedom
        ).astype(dtype)
        if self.weight_concentration_prior_type == "dirichlet_process":
            self.weight_concentration_ = (
                params.concentration.astype(dtype),
                params.concentration_rest.astype(dtype),
            )
        else:
            self.weight_concentration_ = params.concentration.astype(dtype)

    def _fitted_params(self, offset, dtype) -> BayesianMixtureParams:
        n_components = self._n_components_fitted()
        model = self._build_model(n_components, n_components)
        concentration = self.weight_concentration_
        if self.weight_concentration_prior_type == "dirichlet_process":
            concentration, rest = (np.asarray(part, np.float64) for part in concentration)
        else:
            concentration = np.asarray(concentration, np.float64)
            rest = np.zeros_like(concentration)
        dof = np.broadcast_to(np.asarray(self.degrees_of_freedom_, np.float64), (n_components,))
        log_weights = model.expected_log_weights(
            concentration.astype(dtype), rest.astype(dtype), np.ones(n_components, bool)
        )
        leaves = (
            np.asarray(log_weights, dtype),
            GaussianParams(
                np.asarray(np.asarray(self.means_, np.float64) - offset, dtype),
                np.asarray(self.precisions_cholesky_, dtype),
            ),
            np.asarray(self.mean_precision_, dtype),
            dof.astype(dtype),
            concentration.astype(dtype),
            rest.astype(dtype),
        )
        return BayesianMixtureParams(*leaves)

    def _layout_shape(self, attribute, n_components, n_features):
        """Saved shapes (:mod:`jaxem.estimators._persist`): the degrees of freedom are
        one per component, or one number (tied)."""
        if attribute == "degrees_of_freedom_":
            return np.shape(self._family().degrees_of_freedom_layout(np.ones(n_components)))
        return None

    def _sample_components(self, rng, counts) -> np.ndarray:
        """scikit-learn's draws from the covariance estimates."""
        return self._family().sample_numpy(rng, self.means_, self.covariances_, counts)
