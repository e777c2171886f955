"""``jaxem.StudentTMixture``: a mixture of multivariate Student-t distributions.

Robust clustering: every component has its own degrees of freedom, estimated by EM
with latent scales (:class:`jaxem.families.StudentT`), so gross outliers are
down-weighted instead of pulling the means and inflating the covariances.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from jaxem.estimators._base import ACCELERATE_CONSTRAINT, ACCELERATE_PARAMETER, MESH_CONSTRAINT
from jaxem.estimators._mixture import ASSIGNMENT_CONSTRAINT, PRIOR_CONSTRAINTS, MixtureEstimator
from jaxem.families.gaussian import COVARIANCE_TYPES
from jaxem.families.student_t import StudentT, student_t
from jaxem.models.mixture import INIT_METHODS

__all__ = ["StudentTMixture"]


class StudentTMixture(MixtureEstimator):
    __doc__ = f"""Mixture of multivariate Student-t distributions, fitted by batched EM.

    The interface of :class:`jaxem.GaussianMixture` (same parameters where they
    apply, methods and attributes), plus per-component degrees of freedom.

    Parameters
    ----------
    n_components : int, default=1
        The number of mixture components.
    covariance_type : {{'full', 'tied', 'diag', 'spherical'}}, default='full'
        Layout of the scale matrices, as GaussianMixture's covariances.
    tol : float, default=1e-3
        EM stops when the change of the mean per-sample log-likelihood is below
        ``tol``.
    reg_covar : float, default=1e-6
        Non-negative regularisation added to the diagonal of the scale matrices.
    max_iter : int, default=100
        EM iterations per initialisation. 0 returns the initial parameters.
    n_init : int, default=1
        Number of initialisations, run as batched restarts; the best is kept.
    init_params : {{'kmeans', 'k-means++', 'random', 'random_from_data'}}, \
default='kmeans'
        Initial responsibilities, as in GaussianMixture.
    dof : float, default=5.0
        Initial degrees of freedom of every component (kept with ``fix_dof``).
    fix_dof : bool, default=False
        Keep the degrees of freedom at ``dof`` instead of estimating them.
    dof_min, dof_max : float, default=1.0, 200.0
        The estimated degrees of freedom stay in ``[dof_min, dof_max]``.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation and :meth:`sample`.
    warm_start : bool, default=False
        If True, each fit after the first starts from the previous solution.
    verbose : int, default=0
        1 prints each initialisation and iteration, 2 also the log-likelihood changes.
    verbose_interval : int, default=10
        Iterations between printed lines.
    mesh : None, int or jax.sharding.Mesh, default=None
        Devices to spread the fit over (see :func:`jaxem.fit`).
    weights_prior : float >= 1, default=1.0
        jaxem extension, MAP EM: Dirichlet concentration on the mixing weights (see
        :class:`jaxem.GaussianMixture`).
    semi_supervised : bool, default=False
        jaxem extension: if True, ``fit(X, y)`` uses ``y`` as labels (-1 unlabelled).
    assignment : {{'soft', 'hard', 'stochastic'}}, default='soft'
        EM, classification EM or stochastic EM, as in :class:`jaxem.GaussianMixture`.
    {ACCELERATE_PARAMETER}

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
    means_ : ndarray of shape (n_components, n_features)
        The locations (the means wherever ``degrees_of_freedom_ > 1``).
    covariances_ : ndarray
        The **scale matrices** ``Σ_k``, in GaussianMixture's layout for
        ``covariance_type``; a component's covariance is ``ν/(ν - 2) Σ_k`` (for
        ``ν > 2``).
    precisions_ : ndarray
        Inverses of the scale matrices, same layout.
    precisions_cholesky_ : ndarray
        Their Cholesky factors, as GaussianMixture's.
    degrees_of_freedom_ : ndarray of shape (n_components,)
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
        Mean per-sample log-likelihood of the best initialisation at its last E-step.
    lower_bounds_ : list of float
    n_features_in_ : int

    Notes
    -----
    The default ``init_params='kmeans'`` seeds k-means with k-means++, which favours
    far rows: with gross outliers a seed often lands on one, and EM then keeps a
    component for the outliers and merges two clusters (a local optimum of lower
    likelihood). There, ``init_params='random_from_data'`` or ``'random'`` with
    several ``n_init`` finds the better optimum (``benchmarks/outliers.py``).

    Examples
    --------
    >>> import numpy as np
    >>> from jaxem import StudentTMixture
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(-3, 1, (200, 2)), rng.normal(3, 1, (200, 2))])
    >>> X[:20] = rng.uniform(-60, 60, (20, 2))  # 5 % gross outliers
    >>> tm = StudentTMixture(n_components=2, random_state=0).fit(X)
    >>> print(np.sort(tm.means_[:, 0]).round(0))
    [-3.  3.]
    >>> bool(tm.degrees_of_freedom_.min() < 5)  # a heavy-tailed component takes the outliers
    True
    >>> from jaxem import GaussianMixture  # whose means they pull away
    >>> print(np.sort(GaussianMixture(2, random_state=0).fit(X).means_[:, 0]).round(0))
    [-6.  0.]
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "covariance_type": [StrOptions(set(COVARIANCE_TYPES))],
        "tol": [Interval(Real, 0.0, None, closed="left")],
        "reg_covar": [Interval(Real, 0.0, None, closed="left")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "init_params": [StrOptions(set(INIT_METHODS))],
        "dof": [Interval(Real, 0.0, None, closed="neither")],
        "fix_dof": ["boolean"],
        "dof_min": [Interval(Real, 0.0, None, closed="neither")],
        "dof_max": [Interval(Real, 0.0, None, closed="neither")],
        "random_state": ["random_state"],
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
        "verbose_interval": [Interval(Integral, 1, None, closed="left")],
        "mesh": MESH_CONSTRAINT,
        **PRIOR_CONSTRAINTS,
        "assignment": ASSIGNMENT_CONSTRAINT,
        "accelerate": ACCELERATE_CONSTRAINT,
    }

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        dof=5.0,
        fix_dof=False,
        dof_min=1.0,
        dof_max=200.0,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        mesh=None,
        weights_prior=1.0,
        semi_supervised=False,
        assignment="soft",
        accelerate=None,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.dof = dof
        self.fix_dof = fix_dof
        self.dof_min = dof_min
        self.dof_max = dof_max
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.mesh = mesh
        self.weights_prior = weights_prior
        self.semi_supervised = semi_supervised
        self.assignment = assignment
        self.accelerate = accelerate

    def _family(self) -> StudentT:
        return student_t(
            self.covariance_type,
            float(self.reg_covar),
            dof=float(self.dof),
            fix_dof=bool(self.fix_dof),
            dof_min=float(self.dof_min),
            dof_max=float(self.dof_max),
        )

    def _failed_fit_message(self, dtype, failure) -> str:
        return (
            "Fitting the Student-t mixture failed: every initialisation gave non-finite "
            f"parameters ({failure}). Try decreasing the number of components, increasing "
            "reg_covar, scaling the input data, or passing float64 data."
        )

    def _set_components(self, layout, offset, dtype):
        # The scale matrices from the precision factor in float64, as GaussianMixture.
        family = self._family().gaussian
        matrices = family.layout_from_cholesky(layout["precisions_cholesky"])
        self.means_ = (layout["means"] + offset).astype(dtype)
        self.covariances_ = matrices["covariances"].astype(dtype)
        self.precisions_ = matrices["precisions"].astype(dtype)
        self.precisions_cholesky_ = matrices["precisions_cholesky"].astype(dtype)
        self.degrees_of_freedom_ = layout["degrees_of_freedom"].astype(dtype)

    def _component_layout(self, offset):
        return {
            "means": np.asarray(self.means_, np.float64) - offset,
            "precisions_cholesky": np.asarray(self.precisions_cholesky_, np.float64),
            "degrees_of_freedom": np.asarray(self.degrees_of_freedom_, np.float64),
        }

    def _check_warm_start(self, n_features):
        super()._check_warm_start(n_features)
        expected = self._family().layout_shape(int(self.n_components), n_features)
        if np.shape(self.precisions_cholesky_) != expected:
            raise ValueError(
                "warm_start=True continues the previous fit, whose precisions_cholesky_ "
                f"has shape {np.shape(self.precisions_cholesky_)}; this fit needs "
                f"{expected}. Set warm_start=False to start afresh."
            )

    def _sample_components(self, rng, counts):
        means = np.asarray(self.means_, np.float64)
        draws = self._family().gaussian.sample_numpy(rng, means, self.covariances_, counts)
        labels = np.repeat(np.arange(len(counts)), counts)
        half = np.asarray(self.degrees_of_freedom_, np.float64)[labels] / 2
        scales = rng.gamma(half, 1 / half)  # u ~ Gamma(ν/2, rate ν/2)
        return means[labels] + (draws - means[labels]) / np.sqrt(scales)[:, None]
