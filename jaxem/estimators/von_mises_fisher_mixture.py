"""``jaxem.VonMisesFisherMixture``: a mixture of von Mises-Fisher distributions on the
unit sphere, in scikit-learn's style (clustering of directions and normalised
embeddings; spherical k-means as its hard limit)."""

from __future__ import annotations

from numbers import Real

import numpy as np
from sklearn.utils._param_validation import Interval

from jaxem.estimators._mixture import MixtureEstimator
from jaxem.estimators.discrete_mixtures import (
    _COMMON_ATTRIBUTES,
    _COMMON_CONSTRAINTS,
    _COMMON_PARAMETERS,
)
from jaxem.families.von_mises_fisher import VonMisesFisher, von_mises_fisher

__all__ = ["VonMisesFisherMixture"]


class VonMisesFisherMixture(MixtureEstimator):
    __doc__ = f"""Mixture of von Mises-Fisher distributions on the unit sphere, by batched EM.

    Every row of ``X`` is a unit vector (a direction in ``D >= 2`` dimensions);
    every component has a mean direction and a concentration ``κ`` (0 is uniform on
    the sphere, large ``κ`` a tight cap around the mean direction). The data is
    never centred; rows that are not of unit norm raise ``ValueError``.

    Parameters
    ----------
    {_COMMON_PARAMETERS}
    concentration : float or None, default=None
        None: every component's concentration is estimated. A float: every
        component keeps this shared concentration and only the mean directions
        (and weights) are fitted. With ``assignment='hard'`` and a large value
        (say 1e6, against mixing weights whose logs differ by a few units) this is
        spherical k-means: every row goes to the most similar mean direction, and
        every mean direction is the normalised sum of its rows.
    max_concentration : float, default=1e6
        Cap on the estimated concentrations (a component on a single direction).

    Attributes
    ----------
    {_COMMON_ATTRIBUTES}
    means_ : ndarray of shape (n_components, n_features)
        The mean direction (a unit vector) of every component.
    concentrations_ : ndarray of shape (n_components,)
        The concentration ``κ`` of every component.

    Notes
    -----
    The concentration solves ``A_D(κ) = r̄``, the mean resultant length of the
    component's rows, by Banerjee et al. (2005)'s approximation and Newton steps
    (Sra 2012), with the Bessel functions never formed (see
    :mod:`jaxem.families.von_mises_fisher`), and ``1 - r̄`` from the scatter of the
    rows about their mean, so that float32 keeps its digits for concentrated
    components. The log-densities carry an absolute rounding error of about
    ``κ · eps``.

    Examples
    --------
    >>> import numpy as np
    >>> from jaxem import VonMisesFisherMixture
    >>> rng = np.random.default_rng(0)
    >>> centres = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    >>> X = centres[np.arange(400) % 2] + 0.2 * rng.normal(size=(400, 3))
    >>> X /= np.linalg.norm(X, axis=1, keepdims=True)
    >>> vmf = VonMisesFisherMixture(n_components=2, random_state=0).fit(X)
    >>> print(np.abs(vmf.means_[np.argsort(vmf.means_[:, 0])]).round(1))
    [[0. 0. 1.]
     [1. 0. 0.]]
    >>> print(np.sort(vmf.concentrations_).round(0))  # about 1 / 0.2² = 25
    [24. 27.]
    >>> vmf.predict([[0.0, 0.6, 0.8]]).tolist() == [int(np.argmax(vmf.means_[:, 2]))]
    True
    """

    _centres_data = False
    _precision_attribute = "weights_"
    _parameter_constraints: dict = {
        **_COMMON_CONSTRAINTS,
        "concentration": [Interval(Real, 0.0, None, closed="left"), None],
        "max_concentration": [Interval(Real, 0.0, None, closed="neither")],
    }

    def __init__(
        self,
        n_components=1,
        *,
        tol=1e-3,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        concentration=None,
        max_concentration=1e6,
        weights_prior=1.0,
        semi_supervised=False,
        assignment="soft",
    ):
        self.n_components = n_components
        self.tol = tol
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.concentration = concentration
        self.max_concentration = max_concentration
        self.weights_prior = weights_prior
        self.semi_supervised = semi_supervised
        self.assignment = assignment

    def _family(self) -> VonMisesFisher:
        fixed = None if self.concentration is None else float(self.concentration)
        return von_mises_fisher(float(self.max_concentration), fixed)

    def _set_components(self, layout, offset, dtype):
        self.means_ = np.asarray(layout["means"], np.float64).astype(dtype)
        self.concentrations_ = np.asarray(layout["concentrations"], np.float64).astype(dtype)

    def _component_layout(self, offset):
        return {
            "means": np.asarray(self.means_, np.float64),
            "concentrations": np.asarray(self.concentrations_, np.float64),
        }

    def _sample_components(self, rng, counts):
        try:  # Wood (1994)'s sampler, as scipy implements it
            from scipy.stats import vonmises_fisher
        except ImportError as error:  # pragma: no cover - scipy < 1.11
            raise ImportError(
                "VonMisesFisherMixture.sample needs scipy >= 1.11 (scipy.stats."
                "vonmises_fisher); upgrade scipy, or draw with jaxem.engine.sample."
            ) from error
        means = np.asarray(self.means_, np.float64)
        means = means / np.linalg.norm(means, axis=1, keepdims=True)
        kappas = np.asarray(self.concentrations_, np.float64)
        blocks = [
            vonmises_fisher(mean, kappa).rvs(int(count), random_state=rng).reshape(-1, len(mean))
            for mean, kappa, count in zip(means, kappas, counts)
        ]
        return np.vstack(blocks)
