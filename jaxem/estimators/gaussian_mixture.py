"""``jaxem.GaussianMixture``: a drop-in for :class:`sklearn.mixture.GaussianMixture`.

The estimator validates numpy input, builds a :func:`jaxem.mixture` over a
:func:`jaxem.gaussian` family, runs all ``n_init`` initialisations as batched
restarts of :func:`jaxem.fit`, and stores scikit-learn's fitted attributes.
"""

from __future__ import annotations

import dataclasses
from numbers import Integral, Real
from typing import Any, NamedTuple

import jax
import numpy as np
from sklearn.base import _fit_context
from sklearn.utils import check_array
from sklearn.utils._param_validation import Interval, StrOptions

from jaxem import engine
from jaxem.estimators import _array_api, _validation
from jaxem.estimators._base import (
    ACCELERATE_CONSTRAINT,
    MESH_CONSTRAINT,
    in_fitted_precision,
    in_input_precision,
)
from jaxem.estimators._mixture import (
    ASSIGNMENT_CONSTRAINT,
    PRIOR_CONSTRAINTS,
    MixtureEstimator,
)
from jaxem.families.gaussian import COVARIANCE_TYPES, Gaussian, GaussianParams, gaussian
from jaxem.families.low_rank_gaussian import LowRankGaussian, low_rank_gaussian
from jaxem.models.mixture import MixtureParams

__all__ = ["GaussianMixture"]

LOW_RANK = _validation.LOW_RANK

#: What a ``prior`` dict may set (the rest is mclust's default).
_PRIOR_KEYS = ("shrinkage", "mean", "degrees_of_freedom", "scale")


class GaussianMixture(MixtureEstimator):
    """Gaussian mixture fitted by batched EM; a drop-in for scikit-learn's.

    Same parameters, defaults, fitted attributes, methods, warnings and error
    messages as :class:`sklearn.mixture.GaussianMixture`; the ``n_init``
    initialisations run at once as batched restarts of one compiled program
    (:func:`jaxem.fit`), on CPU, GPU or TPU.

    Parameters
    ----------
    n_components : int, default=1
        The number of mixture components.
    covariance_type : {'full', 'tied', 'diag', 'spherical', 'lowrank'}, default='full'
        Each component has its own general covariance matrix ('full'), all share
        one ('tied'), each has its own diagonal ('diag') or single variance
        ('spherical'). jaxem extension: 'lowrank' gives each component a covariance
        ``W_k W_kᵀ + Ψ_k`` with ``W_k`` of ``covariance_rank`` columns and ``Ψ_k``
        diagonal (a mixture of factor analysers, Ghahramani and Hinton 1996; see
        :class:`jaxem.LowRankGaussian`): an E-step costs O(n K D q) instead of
        'full''s O(n K D²). Not with ``*_init``, ``prior``, ``missing='em'`` or
        :meth:`partial_fit`.
    covariance_rank : int or None, default=None
        jaxem extension: the rank ``q`` of 'lowrank' covariances, ``1 <= q <
        n_features``; required with 'lowrank', refused (ValueError) with any other
        covariance type.
    tol : float, default=1e-3
        EM stops when the change of the mean per-sample log-likelihood is below
        ``tol``.
    reg_covar : float, default=1e-6
        Non-negative regularisation added to the diagonal of the covariances.
    max_iter : int, default=100
        EM iterations per initialisation. 0 returns the initial parameters.
    n_init : int, default=1
        Number of initialisations, run as batched restarts; the best is kept and
        run once more on its own, so the result is bit for bit what ``n_init=1``
        gives when restart 0 wins (restart ``r`` starts from the same draw
        whatever ``n_init``).
    init_params : {'kmeans', 'k-means++', 'random', 'random_from_data'}, \
default='kmeans'
        Initial responsibilities: from a k-means fit, one-hot on k-means++ seeds,
        uniform random, or one-hot on random distinct rows.
    weights_init : array-like of shape (n_components,), default=None
        User-provided initial weights.
    means_init : array-like of shape (n_components, n_features), default=None
        User-provided initial means.
    precisions_init : array-like, default=None
        User-provided initial precisions (inverse covariances), shaped
        ``(n_components,)`` spherical, ``(n_features, n_features)`` tied,
        ``(n_components, n_features)`` diag, ``(n_components, n_features,
        n_features)`` full. When only some of the three ``*_init`` are given, the
        others come from the ``init_params`` responsibilities, as scikit-learn
        (for example with ``means_init`` alone the weights and covariances are
        the M-step of those responsibilities, the covariances around their own
        means); when all three are given no initialisation runs and the
        ``n_init`` identical restarts are run once.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation (a JAX key is drawn from
        ``check_random_state(random_state)``) and :meth:`sample`.
    warm_start : bool, default=False
        If True, each fit after the first starts from the previous solution and
        ``n_init`` is ignored.
    verbose : int, default=0
        1 prints each initialisation and iteration, 2 also the log-likelihood
        changes. Printed after the batched run, from its trace.
    verbose_interval : int, default=10
        Iterations between printed lines.
    mesh : None, int or jax.sharding.Mesh, default=None
        jaxem extension: devices to spread the fit over. An int splits the rows over
        that many devices; a ``Mesh`` with axes ``"rows"`` and/or ``"restarts"``
        splits the rows, the restarts, or both (see :func:`jaxem.fit`). The fitted
        model equals the one-device fit up to the rounding of sums. Initialisation
        and EM iterations run sharded; the final E-step and predictions run on one
        device. Not saved by ``save`` (a loaded estimator runs on one device).
    step_decay : float in (0, 1], default=0.6
        jaxem extension, for :meth:`partial_fit`: step ``t`` of online EM moves the
        running statistics by ``(t + 2) ** -step_decay`` towards the batch's.
    prior : None, 'mclust' or dict, default=None
        jaxem extension, MAP EM: a conjugate prior on the components, added to the
        M-step as pseudo-counts (see :meth:`jaxem.Gaussian.conjugate_prior` for the
        priors and their posterior modes). 'mclust' is mclust's default prior
        (Fraley and Raftery 2007, ``priorControl()``): shrinkage 0.01, mean the data
        mean, ``n_features + 2`` degrees of freedom, scale the data covariance
        ``/ n_components^(2/n_features)`` (diag, spherical: the mean variance, a
        number). A dict sets any of ``shrinkage``, ``mean``, ``degrees_of_freedom``,
        ``scale`` (in the data's coordinates) and takes mclust's for the rest.
        ``reg_covar`` is still added. Keeps covariances away from singularity where
        maximum likelihood collapses (many components, few rows).
    weights_prior : float >= 1, default=1.0
        jaxem extension, MAP EM: Dirichlet concentration ``α`` on the mixing
        weights, ``weights_ = (n_k + α - 1) / (n + K (α - 1))``; 1 is maximum
        likelihood.
    semi_supervised : bool, default=False
        jaxem extension: if True, ``fit(X, y)`` uses ``y`` as labels (a component
        index per labelled row, -1 for unlabelled rows; see :meth:`fit`). False
        ignores ``y`` as scikit-learn does.
    assignment : {'soft', 'hard', 'stochastic'}, default='soft'
        jaxem extension: how the E-step assigns rows to components. 'soft' is EM
        (scikit-learn's). 'hard' gives each row to its most probable component
        (classification EM); ``lower_bound_`` and ``lower_bounds_`` are then the mean
        classification log-likelihood, which never decreases. 'stochastic' draws each
        row's component from its posterior (stochastic EM): every initialisation runs
        ``max_iter`` iterations (``converged_`` is False, without a warning), and the
        fitted parameters are the M-step of the statistics averaged over the second
        half of them; ``lower_bound_`` is their mean log-likelihood.
    missing : {'error', 'em'}, default='error'
        jaxem extension: what NaN in ``X`` means. 'error': scikit-learn's "Input
        contains NaN". 'em': NaN entries are missing at random and EM is exact for
        the observed data (the E-step conditions every row on its observed
        coordinates; the statistics hold the conditional means and covariances of
        the missing ones): not imputation before fitting. :meth:`predict`,
        :meth:`predict_proba`, :meth:`score_samples` and :meth:`score` then take NaN
        and use each row's observed marginal, and :meth:`impute` fills NaN with
        conditional means. The data is centred on the observed means of its
        features. A row or, in ``fit``, a feature with nothing observed is an error;
        infinity stays one. Costs one ``n_features x n_features`` Cholesky per row
        and component for 'full' (per row for 'tied'; 'diag' and 'spherical' are
        elementwise).
    accelerate : None or 'squarem', default=None
        jaxem extension: None runs plain EM (scikit-learn's iterations); 'squarem' runs
        SQUAREM (Varadhan and Roland 2008) in every restart: far fewer E-steps where
        EM crawls (overlapping components), and the log-likelihood never decreases
        (see :func:`jaxem.fit`). ``n_iter_`` then counts E-steps. Not for
        :meth:`partial_fit` (online EM) nor ``assignment='stochastic'``.

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
    means_ : ndarray of shape (n_components, n_features)
    covariances_ : ndarray
        Shaped as ``precisions_init`` above; ``(n_components, n_features,
        n_features)`` for 'lowrank' (``W Wᵀ + Ψ``, formed once after the fit, as are
        ``precisions_`` and ``precisions_cholesky_``, also in the 'full' layout).
    loadings_ : ndarray of shape (n_components, n_features, covariance_rank)
        'lowrank' only: the loadings ``W_k`` (up to a rotation of the latent space).
    noise_variances_ : ndarray of shape (n_components, n_features)
        'lowrank' only: the diagonals of ``Ψ_k``.
    precisions_ : ndarray
        Inverse of ``covariances_``, same shape.
    precisions_cholesky_ : ndarray
        Upper-triangular ``U`` with ``U Uᵀ = precision`` ('full', 'tied') or
        ``1/σ`` ('diag', 'spherical'), same shape.
    converged_ : bool
        Whether the best initialisation converged.
    n_iter_ : int
        EM iterations of the best initialisation.
    lower_bound_ : float
        Mean per-sample log-likelihood of the best initialisation at its last
        E-step. With a prior (``prior``, ``weights_prior > 1``) the mean per-sample
        log posterior, ``(log-likelihood + log prior) / n_samples`` up to a constant
        of the prior: EM's convergence test (``tol``) is about it too. With labels,
        the semi-supervised log-likelihood (see :meth:`fit`).
    lower_bounds_ : list of float
        That value at every iteration of the best initialisation.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during fit, when ``X`` has string column names.

    Notes
    -----
    **Precision.** As in scikit-learn, float64 (and integer) ``X`` is computed and
    returned in float64, float32 ``X`` in float32, whatever JAX's global 64-bit
    flag says (it is set around jaxem's own calls only, and restored). float32 is
    the fast path: pass ``X.astype(np.float32)`` for its speed (1.8-2.0x on a
    2-core CPU for this class, ``benchmarks/RESULTS.md``). The data is centred before fitting and
    the statistics are taken about each component's mean, so offsets and narrow
    components keep their digits; :meth:`predict` and :meth:`score` evaluate in
    the precision of the fitted attributes.

    **Array API.** Under ``sklearn.set_config(array_api_dispatch=True)`` the class
    takes array API input (array_api_strict, PyTorch, CuPy, ...) as scikit-learn's
    does: results and fitted attributes come back in the input's namespace and on its
    device, and ``init_params`` must be 'random' or 'random_from_data' (scikit-learn
    raises ``NotImplementedError`` for its k-means inits there, and so does this
    class). jaxem computes in JAX whatever the input, converting at the boundary.

    **Compilation.** The first fit for a given structure (covariance type,
    ``n_components``, ``init_params``, ``n_init``, ``max_iter``, features, dtype)
    compiles; refits reuse the program. Rows are padded with zero-weight rows to
    a bucketed count (the next power of two up to 2048 rows, within 6.25 %
    beyond), so data sets of nearby sizes share one program; padding changes no
    result.

    **Differences from scikit-learn.** Random initialisations use JAX's random
    generator, so for a given ``random_state`` they differ from scikit-learn's
    (fits from the same ``*_init`` parameters agree). A restart whose
    parameters become non-finite is dropped instead of raising; if every
    restart does, a ``ValueError`` names the fixes. :meth:`sample` returns the
    dtype of ``means_``.

    Examples
    --------
    >>> import numpy as np
    >>> from jaxem import GaussianMixture
    >>> X = np.array([[1, 2], [1, 4], [1, 0], [10, 2], [10, 4], [10, 0]])
    >>> gm = GaussianMixture(n_components=2, random_state=0).fit(X)
    >>> print(np.sort(gm.means_, axis=0).round(2))
    [[ 1.  2.]
     [10.  2.]]
    >>> gm.predict([[0, 0], [12, 3]]) == gm.predict([[1, 2], [10, 2]])
    array([ True,  True])
    >>> gm.means_.dtype  # the precision of X (integers: float64), as scikit-learn
    dtype('float64')
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "covariance_type": [StrOptions({*COVARIANCE_TYPES, LOW_RANK})],
        "covariance_rank": [Interval(Integral, 1, None, closed="left"), None],
        "tol": [Interval(Real, 0.0, None, closed="left")],
        "reg_covar": [Interval(Real, 0.0, None, closed="left")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "init_params": [StrOptions({"kmeans", "random", "random_from_data", "k-means++"})],
        "weights_init": ["array-like", None],
        "means_init": ["array-like", None],
        "precisions_init": ["array-like", None],
        "random_state": ["random_state"],
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
        "verbose_interval": [Interval(Integral, 1, None, closed="left")],
        "mesh": MESH_CONSTRAINT,
        "accelerate": ACCELERATE_CONSTRAINT,
        "step_decay": [Interval(Real, 0.0, 1.0, closed="right")],
        "prior": [None, StrOptions({"mclust"}), dict],
        **PRIOR_CONSTRAINTS,
        "assignment": ASSIGNMENT_CONSTRAINT,
        "missing": [StrOptions({"error", "em"})],
    }

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        covariance_rank=None,
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        mesh=None,
        step_decay=0.6,
        prior=None,
        weights_prior=1.0,
        semi_supervised=False,
        assignment="soft",
        missing="error",
        accelerate=None,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.covariance_rank = covariance_rank
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.mesh = mesh
        self.step_decay = step_decay
        self.prior = prior
        self.weights_prior = weights_prior
        self.semi_supervised = semi_supervised
        self.assignment = assignment
        self.missing = missing
        self.accelerate = accelerate

    # -- fitting ---------------------------------------------------------------------------
    @in_input_precision
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None):
        """One step of online EM on the batch ``X`` (jaxem extension).

        Stepwise EM (Cappé and Moulines 2009), batched over ``n_init`` restarts: every
        restart keeps running per-row statistics, moved towards the batch's by
        ``(t + 2) ** -step_decay`` at step ``t``, and its parameters are their
        M-step. The first call initialises the restarts on its batch with
        ``init_params`` (after :meth:`fit`, the fitted parameters are the start). The
        attributes are those of the restart with the highest log-likelihood on the
        latest batch. Batches may differ in size; float32 batches are centred with
        the first batch's offset.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            A batch of rows (the first one needs at least ``n_components``).
        y : Ignored

        Returns
        -------
        self : GaussianMixture
        """
        self._refuse_online_acceleration()
        if self._low_rank():
            raise ValueError(
                "partial_fit (online EM) does not support covariance_type='lowrank': its "
                "statistics are about the E-step's parameters. Use fit, or another "
                "covariance_type."
            )
        if self.prior is not None or float(self.weights_prior) != 1.0:
            raise ValueError(
                "partial_fit runs maximum-likelihood online EM; MAP priors (prior, "
                "weights_prior) apply to fit only. Set prior=None and weights_prior=1.0, "
                "or use fit."
            )
        state = getattr(self, "_online_state", None)
        if state is not None:
            X, x, dtype, offset = self._evaluation_input(X)
            model, online, start = state.model, state.online, None
        elif hasattr(self, "weights_"):  # continue from the fitted parameters
            X, x, dtype, offset = self._evaluation_input(X)
            model = self._model_for(self._n_components_fitted(), X.shape[0])
            fitted = model.pad(self._fitted_params(offset, dtype))
            start, online = jax.tree.map(lambda leaf: np.asarray(leaf)[None], fitted), None
        else:
            X, dtype, offset = self._validate_fit_input(X, ensure_min_samples=2)
            _validation.check_n_samples(X.shape[0], int(self.n_components))
            x = self._centred(X, offset, dtype)
            model = self._model_for(int(self.n_components), X.shape[0])
            key = _validation.random_key(self.random_state)
            start = self._initial_params(model, x, key=key, n_restarts=int(self.n_init))
            online = None
        online, log_likelihood = engine.online_step(
            model, online, x, init_params=start, step_decay=float(self.step_decay)
        )
        if not np.any(np.isfinite(log_likelihood)):
            raise ValueError(
                "Every restart's online EM step gave non-finite values; try a larger "
                "reg_covar, larger batches, or float64 input."
            )
        best = int(np.argmax(log_likelihood))
        self._online_state = _OnlineFit(model, online)
        self._set_fitted(
            model.trim(jax.tree.map(lambda leaf: np.asarray(leaf)[best], online.params)),
            offset,
            dtype,
        )
        self.n_iter_ = int(online.n_steps)
        self.lower_bound_ = float(log_likelihood[best])
        self.converged_ = False  # online EM has no stopping rule: it follows the stream
        self.best_restart_ = best
        return self

    def _check_array_api_dispatch(self) -> None:
        # As scikit-learn's GaussianMixture: its k-means inits do not run under array API
        # dispatch, and a drop-in behaves the same (jaxem's would: it converts at the
        # boundary).
        allowed = ("random", "random_from_data")
        if self.init_params not in allowed:
            raise NotImplementedError(
                f"Allowed `init_params` are {allowed} if 'array_api_dispatch' is enabled. "
                f"You passed init_params={self.init_params!r}, which are not implemented to "
                "work with 'array_api_dispatch' enabled, as in scikit-learn. Please disable "
                f"'array_api_dispatch' to use init_params={self.init_params!r}."
            )

    def _fit(self, X, y=None, component_prior=None):
        self.__dict__.pop("_online_state", None)  # a new fit ends any online one
        return super()._fit(X, y, component_prior)

    def _with_priors(self, model, X, offset):
        """The Dirichlet prior on the weights, and ``prior`` on the components: the
        family's MAP M-step with the conjugate prior's fields."""
        model = super()._with_priors(model, X, offset)
        if self.prior is None:
            return model
        if self._low_rank():
            raise ValueError(
                "prior (a conjugate prior on the covariances) is not available with "
                "covariance_type='lowrank'. Set prior=None (reg_covar still regularises)."
            )
        family = self._family()
        settings = {} if self.prior == "mclust" else dict(self.prior)
        unknown = set(settings) - set(_PRIOR_KEYS)
        if unknown:
            raise ValueError(
                f"prior has unknown keys {sorted(unknown)}; use 'mclust' or a dict of "
                f"{list(_PRIOR_KEYS)}."
            )
        n_components = int(self.n_components)
        values = family.default_conjugate_prior(X, n_components)
        values.update(settings)
        values["mean"] = np.asarray(values["mean"], np.float64) - offset
        fields = family.conjugate_prior(**values, n_components=n_components)
        prior_family = gaussian(
            self.covariance_type, float(self.reg_covar), exact=True, map_prior=True, **fields
        )
        return dataclasses.replace(model, family=prior_family)

    def _start(self, model, X, x, key, offset, dtype):
        """The user's ``*_init`` parameters where given (warm start first)."""
        if self._low_rank() and any(
            value is not None
            for value in (self.weights_init, self.means_init, self.precisions_init)
        ):
            raise ValueError(
                "weights_init, means_init and precisions_init are not available with "
                "covariance_type='lowrank' (its components start from init_params). Set "
                "them to None, or use warm_start to continue a previous fit."
            )
        user_init = self._check_initial_parameters(X.shape[1])
        warm = bool(self.warm_start) and hasattr(self, "converged_")
        if warm or all(value is None for value in user_init.values()):
            return super()._start(model, X, x, key, offset, dtype)
        max_iter = int(self.max_iter)
        if all(value is not None for value in user_init.values()):
            # No randomness: the n_init restarts would be identical.
            return 1, model.pad(self._user_params(user_init, offset, dtype)), max_iter, False

        def initial(count, first):
            return self._mixed_params(model, key, x, count, first, user_init, offset)

        return int(self.n_init), initial, max_iter, False

    def _failed_fit_message(self, dtype, failure) -> str:
        return _failed_fit_message(dtype, failure)

    def _low_rank(self) -> bool:
        return self.covariance_type == LOW_RANK

    def _family(self) -> Gaussian | LowRankGaussian:
        """The component family: everything about the covariance layout lives there."""
        if _validation.check_low_rank_options(
            self.covariance_type, self.covariance_rank, self.missing
        ):
            return low_rank_gaussian(int(self.covariance_rank), reg_covar=float(self.reg_covar))
        # The exact forms: scikit-learn's digits on offset data and narrow components.
        return gaussian(
            self.covariance_type, float(self.reg_covar), exact=True, missing=self._accepts_missing()
        )

    @in_fitted_precision
    def impute(self, X):
        """``X`` with its missing entries (NaN) replaced by their conditional means
        (jaxem extension).

        Every NaN becomes ``Σ_k p(k | x_o) E_k[x_m | x_o]``: the components' conditional
        means given the row's observed entries ``x_o``, weighted by the posterior
        computed from those entries alone. Observed entries are returned unchanged.
        Works after any fit (``missing='em'`` fits with the missing entries; a fit on
        complete data imputes too).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            NaN marks a missing entry; a row with nothing observed gets the mixture's
            mean.

        Returns
        -------
        X_imputed : ndarray of shape (n_samples, n_features)

        Examples
        --------
        >>> import numpy as np
        >>> from jaxem import GaussianMixture
        >>> rng = np.random.default_rng(0)
        >>> X = rng.multivariate_normal([0, 0], [[1, 0.9], [0.9, 1]], size=200)
        >>> gm = GaussianMixture(random_state=0).fit(X)
        >>> gm.impute([[2.0, np.nan]]).round(1)  # about 0.9 x 2, by the correlation
        array([[2. , 1.8]])
        """
        X, x, dtype, offset = self._evaluation_input(X, allow_nan=True)
        model = self._model_for(self._n_components_fitted(), X.shape[0])
        # The fitted parameters with a family that conditions on the observed entries.
        model = dataclasses.replace(model, family=dataclasses.replace(model.family, missing=True))
        params = model.pad(self._fitted_params(offset, dtype))
        filled = np.asarray(engine.evaluate(model, params, x, "impute"), np.float64) + offset
        return np.where(np.isnan(X), filled, X).astype(X.dtype, copy=False)

    def _fitted_params(self, offset, dtype):
        if self._low_rank():
            return super()._fitted_params(offset, dtype)
        return self._params_from_attributes(self.weights_, self.means_, offset, dtype)

    # -- initial parameters ----------------------------------------------------------------
    def _check_initial_parameters(self, n_features):
        """Validated copies of the user's ``*_init`` (the constructor args are untouched)."""
        n_components = int(self.n_components)
        checked = {"weights": None, "means": None, "precisions": None}
        if self.weights_init is not None:
            checked["weights"] = _check_weights(self.weights_init, n_components)
        if self.means_init is not None:
            checked["means"] = _check_means(self.means_init, n_components, n_features)
        if self.precisions_init is not None:
            checked["precisions"] = _check_precisions(
                self.precisions_init, self._family(), n_components, n_features
            )
        return checked

    def _check_warm_start(self, n_features):
        if self._low_rank():
            super()._check_warm_start(n_features)
            loadings = np.shape(getattr(self, "loadings_", ()))
            if loadings[1:] != (n_features, int(self.covariance_rank)):
                raise ValueError(
                    "warm_start=True continues the previous fit, whose loadings_ have "
                    f"shape {loadings}; this fit needs rank {self.covariance_rank}. Set "
                    "warm_start=False to start afresh."
                )
            return
        expected = self._family().layout_shape(int(self.n_components), n_features)
        found = np.shape(self.precisions_cholesky_)
        if np.shape(self.means_) != (int(self.n_components), n_features) or found != expected:
            raise ValueError(
                "warm_start=True continues the previous fit, whose parameters have "
                f"means_ of shape {np.shape(self.means_)} and precisions_cholesky_ of shape "
                f"{found}; this fit needs {(int(self.n_components), n_features)} and "
                f"{expected}. Set warm_start=False to start afresh."
            )

    def _user_params(self, user_init, offset, dtype):
        """Initial parameters when weights, means and precisions are all given."""
        chol = self._family().cholesky_from_precisions(user_init["precisions"])
        return _host_params(user_init["weights"], user_init["means"] - offset, chol, dtype)

    def _mixed_params(self, model, key, x, n_restarts, first_restart, user_init, offset):
        """Initialise every restart with ``init_params``, then put in the user's parts."""
        dtype = x.dtype
        padded = self._initial_params(
            model, x, key=key, n_restarts=n_restarts, first_restart=first_restart
        )
        log_weights, (means, chol) = engine.per_restart(model.trim, padded)
        if user_init["weights"] is not None:
            with np.errstate(divide="ignore"):  # a zero weight is allowed: log 0 = -inf
                log_weights = np.broadcast_to(np.log(user_init["weights"]), log_weights.shape)
        if user_init["means"] is not None:
            means = np.broadcast_to(user_init["means"] - offset, means.shape)
        if user_init["precisions"] is not None:
            user_chol = self._family().cholesky_from_precisions(user_init["precisions"])
            chol = np.broadcast_to(user_chol, chol.shape)
        mixed = MixtureParams(
            np.asarray(log_weights, dtype),
            GaussianParams(np.asarray(means, dtype), np.asarray(chol, dtype)),
        )
        return engine.per_restart(model.pad, mixed)

    def _params_from_attributes(self, weights, means, offset, dtype):
        centred = np.asarray(means, np.float64) - offset
        return _host_params(weights, centred, self.precisions_cholesky_, dtype)

    # -- fitted attributes -----------------------------------------------------------------
    def _set_fitted(self, params, offset, dtype):
        """scikit-learn's attributes from the engine's parameters, computed in float64."""
        if self._low_rank():
            for name in ("loadings_", "noise_variances_"):
                self.__dict__.pop(name, None)
            return super()._set_fitted(params, offset, dtype)
        log_weights, (means, chol) = jax.tree.map(
            lambda leaf: np.asarray(leaf, np.float64), jax.device_get(params)
        )
        self.weights_ = np.exp(log_weights).astype(dtype)
        set_gaussian_attributes(self, self._family(), means, chol, offset, dtype)

    @_array_api.in_input_namespace
    def _sample_components(self, rng, counts):
        # scikit-learn's algorithm on the same generator: equal parameters and
        # random_state give scikit-learn's samples ('lowrank': from its full covariances).
        family = gaussian("full") if self._low_rank() else self._family()
        return family.sample_numpy(rng, self.means_, self.covariances_, counts)

    # -- 'lowrank' attributes (the generic mixture path) -----------------------------------
    def _set_components(self, layout: dict, offset, dtype) -> None:
        self.means_ = (layout["means"] + offset).astype(dtype)
        for name in ("loadings", "noise_variances", "covariances", "precisions"):
            setattr(self, f"{name}_", layout[name].astype(dtype))
        self.precisions_cholesky_ = layout["precisions_cholesky"].astype(dtype)

    def _component_layout(self, offset) -> dict:
        return {
            "means": np.asarray(self.means_, np.float64) - offset,
            "loadings": self.loadings_,
            "noise_variances": self.noise_variances_,
        }

    def _layout_shape(self, attribute, n_components, n_features):
        """Shapes of the 'lowrank' attributes, for loading saved estimators."""
        if attribute == "loadings_":
            return (n_components, n_features, int(self.covariance_rank))
        return None


def set_gaussian_attributes(estimator, family, means, chol, offset, dtype) -> None:
    """``means_``, ``covariances_``, ``precisions_``, ``precisions_cholesky_`` and the
    centring offset of a Gaussian mixture estimator from float64 centred ``means`` and
    precision factors ``chol`` (also used by ``BayesianGaussianMixture``)."""
    estimator.means_ = (means + offset).astype(dtype)
    layout = family.layout_from_cholesky(chol)
    estimator.covariances_ = layout["covariances"].astype(dtype)
    estimator.precisions_ = layout["precisions"].astype(dtype)
    estimator.precisions_cholesky_ = layout["precisions_cholesky"].astype(dtype)
    estimator._fit_offset = np.asarray(offset, np.float64)


def _host_params(weights, centred_means, precisions_cholesky, dtype) -> MixtureParams:
    """Mixture parameters as numpy arrays of ``dtype`` (no device work until the fit)."""
    with np.errstate(divide="ignore"):  # a zero weight is allowed: log 0 = -inf
        log_weights = np.log(np.asarray(weights, np.float64))
    return MixtureParams(
        log_weights.astype(dtype),
        GaussianParams(np.asarray(centred_means, dtype), np.asarray(precisions_cholesky, dtype)),
    )


# -- checks of user-supplied initial parameters (scikit-learn's messages) ------------------
def _check_shape(param, param_shape, name):
    if param.shape != param_shape:
        raise ValueError(
            f"The parameter '{name}' should have the shape of {param_shape}, but got {param.shape}"
        )


class _OnlineFit(NamedTuple):
    """What :meth:`GaussianMixture.partial_fit` carries between calls (not saved)."""

    model: Any
    online: engine.OnlineState


def _failed_fit_message(dtype, failure) -> str:
    """scikit-learn's message for a fit whose covariances broke down, then jaxem's."""
    message = (
        "Fitting the mixture model failed because some components have ill-defined "
        "empirical covariance (for instance caused by singleton or collapsed samples). "
        "Try to decrease the number of components, increase reg_covar, or scale the "
        "input data."
    )
    if dtype == np.float32:
        message += (
            " The numerical accuracy can also be improved by passing float64 data "
            "instead of float32."
        )
    return f"{message} ({failure})"


def _check_weights(weights, n_components):
    weights = check_array(weights, dtype=[np.float64, np.float32], ensure_2d=False)
    _check_shape(weights, (n_components,), "weights")
    if np.any(weights < 0.0) or np.any(weights > 1.0):
        raise ValueError(
            # scikit-learn's message word for word (its labels swap min and max), so
            # code and tests matching it keep working.
            "The parameter 'weights' should be in the range [0, 1], but got "
            f"max value {np.min(weights):.5f}, min value {np.max(weights):.5f}"
        )
    atol = 1e-6 if weights.dtype == np.float32 else 1e-8
    if not np.allclose(abs(1.0 - np.sum(weights)), 0.0, atol=atol):
        raise ValueError(
            "The parameter 'weights' should be normalized, but got sum(weights) = "
            f"{np.sum(weights):.5f}"
        )
    return np.asarray(weights, np.float64)


def _check_means(means, n_components, n_features):
    means = check_array(means, dtype=[np.float64, np.float32], ensure_2d=False)
    _check_shape(means, (n_components, n_features), "means")
    return np.asarray(means, np.float64)


def _check_precisions(precisions, family, n_components, n_features):
    """scikit-learn's array validation here, the family's layout checks after it."""
    precisions = check_array(
        precisions,
        dtype=[np.float64, np.float32],
        ensure_2d=False,
        allow_nd=len(family.layout_shape(n_components, n_features)) > 2,
    )
    return family.check_precisions(precisions, n_components, n_features)
