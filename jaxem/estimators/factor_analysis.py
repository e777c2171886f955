"""``jaxem.FactorAnalysis`` (a drop-in for :class:`sklearn.decomposition.FactorAnalysis`)
and ``jaxem.ProbabilisticPCA`` in the same style, over the
:func:`jaxem.factor_analysis` / :func:`jaxem.ppca` model.

scikit-learn fits factor analysis by an SVD-based alternation (Barber, Algorithm
21.1): each iteration a (randomized) SVD of the whole scaled data. jaxem fits the
same model by EM (Rubin and Thayer 1982): each iteration one pass over the rows at
O(n D q), with ``n_init`` restarts batched in one compiled program. Both reach the
same maximum-likelihood solution; EM takes more, cheaper iterations.
"""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from jaxem.contract import Status
from jaxem.estimators import _validation
from jaxem.estimators._base import EMEstimator, in_fitted_precision, in_input_precision
from jaxem.models.latent_linear import LatentLinear, LatentLinearParams

__all__ = ["FactorAnalysis", "ProbabilisticPCA"]

#: Rotations of the loadings (scikit-learn's ``rotation``): the criterion's weight on
#: the squared column means (Crawford-Ferguson orthomax family).
_ORTHOMAX_GAMMA = {"varimax": 1.0, "quartimax": 0.0}


class _LatentLinearEstimator(ClassNamePrefixFeaturesOutMixin, TransformerMixin, EMEstimator):
    """What factor analysis and probabilistic PCA share: validation, the engine call
    with ``n_init`` batched restarts, scikit-learn's ``loglike_`` and the methods."""

    _noise = "diagonal"
    _precision_attribute = "mean_"

    # -- fitting ---------------------------------------------------------------------------
    def _resolve_n_components(self, n_features: int) -> int:
        raise NotImplementedError

    def _fit(self, X):
        X = _validation.check_data(self, X, reset=True)
        dtype = _validation.compute_dtype(X.dtype)
        n_samples, n_features = X.shape
        n_components = self._resolve_n_components(n_features)
        self._check_n_components(n_components, n_samples, n_features)
        noise_init = self._noise_variance_init(n_features)
        # Centre as scikit-learn does: mean_ is the column mean, EM works about it.
        offset = X.mean(axis=0, dtype=np.float64)
        x = self._centred(X, offset, dtype)
        model = self._build_model(n_components, n_components)
        key = _validation.random_key(self.random_state)

        init_params = None
        if noise_init is not None:

            def init_params(count, first):
                start = self._initial_params(
                    model, x, key=key, n_restarts=count, first_restart=first
                )
                noise = np.broadcast_to(noise_init.astype(dtype), (count, n_features))
                return start._replace(noise_variance=np.array(noise))

        # scikit-learn's tol bounds the change of the summed log-likelihood; the
        # engine's the change of the mean per row.
        result = self._engine_fit(
            model,
            x,
            key=key,
            n_restarts=int(self.n_init),
            max_iter=int(self.max_iter),
            tol=float(self.tol) / n_samples,
            init_params=init_params,
            rerun_alone=True,
        )
        if result.restarts.status[result.best_restart] == Status.MAX_ITER:
            warnings.warn(
                f"{type(self).__name__} did not converge. You might want to increase "
                "the number of iterations.",
                ConvergenceWarning,
                stacklevel=3,
            )
        params = result.params
        components = np.asarray(params.components, np.float64)
        self._fit_offset = offset
        self.mean_ = (offset + np.asarray(params.mean, np.float64)).astype(dtype)
        self.components_ = self._rotated(components).astype(dtype)
        self._set_noise(np.asarray(params.noise_variance), dtype)
        self.n_iter_ = int(result.n_iter)
        # scikit-learn's loglike_: the summed log-likelihood after each iteration,
        # the last that of the fitted parameters (the engine's trace holds the
        # parameters before each M-step, so the fitted ones are scored once more).
        trace = np.asarray(self.restarts_.trace[self.best_restart_], np.float64)
        final = float(np.sum(self._evaluate(X, "log_prob"), dtype=np.float64))
        self.loglike_ = [float(v) * n_samples for v in trace[1 : self.n_iter_]] + [final]
        return self

    def _check_n_components(self, n_components, n_samples, n_features):
        if n_components > n_samples:
            raise ValueError(
                f"n_components={n_components} must be <= n_samples={n_samples}: more "
                "latent dimensions than rows cannot be estimated. Use fewer components "
                "or more rows."
            )
        # The functional model checks against the feature count (its message).
        self._build_model(n_components, n_components).check_features(n_features)

    def _noise_variance_init(self, n_features):
        return None

    def _rotated(self, components):
        return components

    # -- the base's hooks --------------------------------------------------------------------
    def _build_model(self, n_components, max_components):
        del max_components  # latent dimensions are not padded
        return LatentLinear(int(n_components), noise=self._noise)

    def _model_for(self, n_components, n_rows):
        return self._build_model(n_components, n_components)

    def _n_components_fitted(self):
        return int(np.shape(self.components_)[0])

    def _noise_vector(self):
        return np.broadcast_to(np.asarray(self.noise_variance_), np.shape(self.mean_))

    def _fitted_params(self, offset, dtype):
        mean = np.asarray(self.mean_, np.float64) - offset
        return LatentLinearParams(
            np.asarray(mean, dtype),
            np.asarray(self.components_, dtype),
            np.asarray(self._noise_vector(), dtype),
        )

    # -- evaluation ------------------------------------------------------------------------
    @in_fitted_precision
    def transform(self, X):
        """Posterior mean of the latent variables, ``E[z | x]``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_components)
        """
        return self._evaluate(X, "transform")

    @in_fitted_precision
    def score_samples(self, X):
        """Log-likelihood of every row under the fitted model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ll : ndarray of shape (n_samples,)
        """
        return self._evaluate(X, "log_prob")

    @in_fitted_precision
    def score(self, X, y=None):
        """Average log-likelihood of the rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : Ignored

        Returns
        -------
        ll : float
        """
        return float(np.mean(self.score_samples(X), dtype=np.float64))

    def get_covariance(self):
        """Model covariance ``components_ᵀ components_ + diag(noise_variance_)``.

        Returns
        -------
        cov : ndarray of shape (n_features, n_features)
        """
        check_is_fitted(self)
        w = np.asarray(self.components_, np.float64)
        covariance = w.T @ w + np.diag(self._noise_vector().astype(np.float64))
        return covariance.astype(self.components_.dtype)

    def get_precision(self):
        """Model precision (inverse covariance), by the Woodbury identity (O(D² q)).

        Returns
        -------
        precision : ndarray of shape (n_features, n_features)
        """
        check_is_fitted(self)
        w = np.asarray(self.components_, np.float64)
        inverse_noise = 1.0 / self._noise_vector().astype(np.float64)
        scaled = w * inverse_noise  # W Ψ⁻¹, (q, D)
        inner = np.eye(w.shape[0]) + scaled @ w.T
        precision = np.diag(inverse_noise) - scaled.T @ np.linalg.solve(inner, scaled)
        return precision.astype(self.components_.dtype)

    @property
    def _n_features_out(self):
        return self.components_.shape[0]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


class FactorAnalysis(_LatentLinearEstimator):
    """Factor analysis by batched EM; a drop-in for scikit-learn's.

    ``x = mean_ + components_ᵀ z + ε`` with ``z ~ N(0, I)`` and ``ε ~ N(0,
    diag(noise_variance_))``. Same parameters, defaults, attributes, methods,
    warning and error messages as :class:`sklearn.decomposition.FactorAnalysis`;
    the fit is EM (:func:`jaxem.factor_analysis`), with ``n_init`` restarts batched.

    Parameters
    ----------
    n_components : int, default=None
        Dimensionality of the latent space; None means ``n_features``. At most
        ``n_features`` and at most ``n_samples``.
    tol : float, default=1e-2
        Stop when the summed log-likelihood rises by less than ``tol`` in an
        iteration (scikit-learn's rule).
    copy : bool, default=True
        Accepted for compatibility; jaxem never modifies ``X``.
    max_iter : int, default=1000
        EM iterations per restart.
    noise_variance_init : array-like of shape (n_features,), default=None
        Initial noise variances; None starts from each feature's variance (scikit-learn
        starts from ones, which is not scale-invariant).
    svd_method : {'lapack', 'randomized'}, default='randomized'
        Accepted for compatibility and validated; EM needs no SVD, so both fit alike.
    iterated_power : int, default=3
        Accepted for compatibility and validated (scikit-learn's randomized SVD).
    rotation : {'varimax', 'quartimax'}, default=None
        Orthogonal rotation of the fitted loadings (Kaiser 1958), applied after EM.
    random_state : int, RandomState instance or None, default=0
        Seeds the initial loadings of every restart.
    n_init : int, default=1
        jaxem extension: EM restarts, run batched; the highest likelihood is kept.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        Loadings (rotated if ``rotation`` is set).
    loglike_ : list of length n_iter_
        Summed log-likelihood after each iteration; the last is that of the fitted
        parameters (``score_samples(X).sum()``).
    noise_variance_ : ndarray of shape (n_features,)
        Noise variance of every feature (at least 1e-12).
    n_iter_ : int
        Iterations run by the kept restart.
    mean_ : ndarray of shape (n_features,)
        Per-feature mean of the training rows.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
    restarts_, best_restart_ :
        jaxem extensions: every restart's outcome and the one kept.

    Notes
    -----
    Float32 input is fitted and returned in float32, float64 (and integer) input in
    float64. EM converges linearly: with scikit-learn's default ``tol`` it stops
    where the log-likelihood changes by ``tol`` in total, usually after more
    iterations than scikit-learn's SVD iteration, each far cheaper (one O(n D q)
    pass over the rows; ``benchmarks/results/factor_analysis.md``).

    Examples
    --------
    >>> import numpy as np
    >>> from jaxem import FactorAnalysis
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 1)) @ [[1.0, 2.0, -1.0, 0.5]] + rng.normal(size=(200, 4)) * 0.3
    >>> fa = FactorAnalysis(n_components=1, random_state=0).fit(X)
    >>> fa.transform(X).shape, fa.components_.shape
    ((200, 1), (1, 4))
    >>> bool(np.isclose(fa.loglike_[-1], fa.score_samples(X).sum()))
    True
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 0, None, closed="left"), None],
        "tol": [Interval(Real, 0.0, None, closed="left")],
        "copy": ["boolean"],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "noise_variance_init": ["array-like", None],
        "svd_method": [StrOptions({"randomized", "lapack"})],
        "iterated_power": [Interval(Integral, 0, None, closed="left")],
        "rotation": [StrOptions({"varimax", "quartimax"}), None],
        "random_state": ["random_state"],
        "n_init": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        n_components=None,
        *,
        tol=1e-2,
        copy=True,
        max_iter=1000,
        noise_variance_init=None,
        svd_method="randomized",
        iterated_power=3,
        rotation=None,
        random_state=0,
        n_init=1,
    ):
        self.n_components = n_components
        self.tol = tol
        self.copy = copy
        self.max_iter = max_iter
        self.noise_variance_init = noise_variance_init
        self.svd_method = svd_method
        self.iterated_power = iterated_power
        self.rotation = rotation
        self.random_state = random_state
        self.n_init = n_init

    @in_input_precision
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit the factor analysis model by EM.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : Ignored

        Returns
        -------
        self : FactorAnalysis

        Warns
        -----
        ConvergenceWarning
            If the kept restart reached ``max_iter`` before converging.
        """
        return self._fit(X)

    def _resolve_n_components(self, n_features):
        return n_features if self.n_components is None else int(self.n_components)

    def _noise_variance_init(self, n_features):
        if self.noise_variance_init is None:
            return None
        noise = np.asarray(self.noise_variance_init, np.float64)
        if noise.ndim != 1 or len(noise) != n_features:
            raise ValueError(
                "noise_variance_init dimension does not with number of features : "
                f"{len(np.atleast_1d(noise))} != {n_features}"
            )
        if not (np.all(np.isfinite(noise)) and np.all(noise > 0)):
            raise ValueError("noise_variance_init must hold finite, positive variances.")
        return noise

    def _set_noise(self, noise, dtype):
        self.noise_variance_ = np.asarray(noise, dtype)

    def _rotated(self, components):
        if self.rotation is None or components.shape[0] < 2:
            return components
        return orthomax(components, self.rotation)


class ProbabilisticPCA(_LatentLinearEstimator):
    """Probabilistic PCA (Tipping and Bishop 1999) by batched EM.

    ``x = mean_ + components_ᵀ z + ε`` with ``z ~ N(0, I)`` and ``ε ~ N(0,
    noise_variance_ I)``; in the style of :class:`FactorAnalysis` (same methods
    and attributes, a scalar ``noise_variance_``). The maximum-likelihood solution
    spans the leading principal subspace, with ``noise_variance_`` the mean of the
    discarded eigenvalues of the sample covariance.

    Parameters
    ----------
    n_components : int, default=None
        Latent dimensions, below ``n_features``; None means ``n_features - 1``.
    tol : float, default=1e-2
        Stop when the summed log-likelihood rises by less than ``tol``.
    max_iter : int, default=1000
        EM iterations per restart.
    random_state : int, RandomState instance or None, default=0
        Seeds the initial loadings of every restart.
    n_init : int, default=1
        EM restarts, run batched; the highest likelihood is kept.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        Loadings ``W`` (any rotation of the principal axes scaled by
        ``sqrt(λ - σ²)``: the likelihood does not fix the rotation).
    noise_variance_ : float
        ``σ²``.
    mean_, loglike_, n_iter_, n_features_in_, feature_names_in_ :
        As in :class:`FactorAnalysis`.

    Examples
    --------
    >>> import numpy as np
    >>> from jaxem import ProbabilisticPCA
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(300, 1)) @ [[3.0, 0.0, 0.0]] + rng.normal(size=(300, 3))
    >>> ppca = ProbabilisticPCA(n_components=1, tol=1e-6).fit(X)
    >>> eigenvalues = np.linalg.eigvalsh(np.cov(X, rowvar=False, bias=True))
    >>> bool(np.isclose(ppca.noise_variance_, eigenvalues[:2].mean(), rtol=1e-3))
    True
    """

    _noise = "isotropic"

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 0, None, closed="left"), None],
        "tol": [Interval(Real, 0.0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "n_init": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, n_components=None, *, tol=1e-2, max_iter=1000, random_state=0, n_init=1):
        self.n_components = n_components
        self.tol = tol
        self.max_iter = max_iter
        self.random_state = random_state
        self.n_init = n_init

    @in_input_precision
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit probabilistic PCA by EM.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : Ignored

        Returns
        -------
        self : ProbabilisticPCA
        """
        return self._fit(X)

    def _resolve_n_components(self, n_features):
        return n_features - 1 if self.n_components is None else int(self.n_components)

    def _set_noise(self, noise, dtype):
        self.noise_variance_ = dtype.type(noise.reshape(-1)[0])


def orthomax(components, method="varimax", *, tol=1e-6, max_iter=100):
    """Orthogonal rotation of loadings ``(q, D)`` maximising the varimax or quartimax
    criterion (Kaiser 1958), by the SVD iteration of the orthomax family.

    Parameters
    ----------
    components : ndarray of shape (q, D)
    method : {"varimax", "quartimax"}
    tol : float
        Stop when the criterion rises by less than ``tol`` relatively.
    max_iter : int

    Returns
    -------
    ndarray of shape (q, D): ``R components`` with ``R`` orthogonal.

    Examples
    --------
    >>> rotated = orthomax(np.array([[1.0, 1.0, 0.0], [1.0, -1.0, 1.0]]))
    >>> np.allclose(rotated.T @ rotated, [[2, 0, 1], [0, 2, -1], [1, -1, 1]])
    True
    """
    gamma = _ORTHOMAX_GAMMA[method]
    loadings = np.asarray(components, np.float64).T  # (D, q)
    n_rows, n_factors = loadings.shape
    rotation = np.eye(n_factors)
    criterion = 0.0
    for _ in range(max_iter):  # a few q x q SVDs on the host, after the fit
        rotated = loadings @ rotation
        cubed = rotated**3 - (gamma / n_rows) * rotated * np.sum(rotated**2, axis=0)
        left, singular, right = np.linalg.svd(loadings.T @ cubed)
        rotation = left @ right
        new = singular.sum()
        if criterion and new < criterion * (1 + tol):
            break
        criterion = new
    return (loadings @ rotation).T
