"""Mixtures of counts, binary vectors and categorical columns, in scikit-learn's style.

``jaxem.PoissonMixture``, ``jaxem.BernoulliMixture``, ``jaxem.CategoricalMixture``
(latent class analysis) and ``jaxem.MultinomialMixture`` (bag of words) share
:class:`~jaxem.estimators._mixture.MixtureEstimator` with
:class:`jaxem.GaussianMixture`: the same parameters where they mean something
(``n_components``, ``tol``, ``max_iter``, ``n_init``, ``init_params``,
``random_state``, ``warm_start``, ``verbose``, ``verbose_interval``), the same
methods and attributes, and their own component attributes. The data is never
centred: it must stay in the family's support, which every method checks.
"""

from __future__ import annotations

import dataclasses
from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from jaxem import engine
from jaxem.estimators import _validation
from jaxem.estimators._base import (
    ACCELERATE_CONSTRAINT,
    ACCELERATE_PARAMETER,
    EMEstimator,
    in_fitted_precision,
)
from jaxem.estimators._mixture import (
    ASSIGNMENT_CONSTRAINT,
    PRIOR_CONSTRAINTS,
    PRIOR_PARAMETERS,
    MixtureEstimator,
)
from jaxem.families.base import check_observed_rows
from jaxem.families.bernoulli import bernoulli
from jaxem.families.categorical import categorical
from jaxem.families.multinomial import multinomial
from jaxem.families.poisson import poisson
from jaxem.models.mixture import INIT_METHODS

__all__ = ["PoissonMixture", "BernoulliMixture", "CategoricalMixture", "MultinomialMixture"]

_COMMON_CONSTRAINTS: dict = {
    "n_components": [Interval(Integral, 1, None, closed="left")],
    "tol": [Interval(Real, 0.0, None, closed="left")],
    "max_iter": [Interval(Integral, 0, None, closed="left")],
    "n_init": [Interval(Integral, 1, None, closed="left")],
    "init_params": [StrOptions(set(INIT_METHODS))],
    "random_state": ["random_state"],
    "warm_start": ["boolean"],
    "verbose": ["verbose"],
    "verbose_interval": [Interval(Integral, 1, None, closed="left")],
    **PRIOR_CONSTRAINTS,
    "assignment": ASSIGNMENT_CONSTRAINT,
    "accelerate": ACCELERATE_CONSTRAINT,
}

_COMMON_PARAMETERS = (
    """n_components : int, default=1
        The number of mixture components.
    tol : float, default=1e-3
        EM stops when the change of the mean per-sample log-likelihood is below
        ``tol``.
    max_iter : int, default=100
        EM iterations per initialisation. 0 returns the initial parameters.
    n_init : int, default=1
        Number of initialisations, run as batched restarts; the best is kept.
    init_params : {'kmeans', 'k-means++', 'random', 'random_from_data'}, \
default='kmeans'
        Initial responsibilities, as in :class:`jaxem.GaussianMixture`: from a
        k-means fit, one-hot on k-means++ seeds, uniform random, or one-hot on
        random distinct rows (k-means runs on the family's features).
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation and :meth:`sample`.
    warm_start : bool, default=False
        If True, each fit after the first starts from the previous solution.
    verbose : int, default=0
        1 prints each initialisation and iteration, 2 also the log-likelihood changes.
    verbose_interval : int, default=10
        Iterations between printed lines.
    assignment : {'soft', 'hard', 'stochastic'}, default='soft'
        jaxem extension: EM, classification EM or stochastic EM, as in
        :class:`jaxem.GaussianMixture` (which says what is monitored and returned in
        each mode).
    """
    + PRIOR_PARAMETERS
    + "\n    "
    + ACCELERATE_PARAMETER
)

_COMMON_ATTRIBUTES = """weights_ : ndarray of shape (n_components,)
    converged_ : bool
        Whether the best initialisation converged.
    n_iter_ : int
        EM iterations of the best initialisation.
    lower_bound_ : float
        Mean per-sample log-likelihood of the best initialisation at its last E-step.
    lower_bounds_ : list of float
        That value at every iteration of the best initialisation.
    n_features_in_ : int
        Number of features seen during fit."""


class _DiscreteMixture(MixtureEstimator):
    """The parameters every discrete mixture shares; data is never centred."""

    _centres_data = False
    _precision_attribute = "weights_"
    _parameter_constraints: dict = dict(_COMMON_CONSTRAINTS)

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
        weights_prior=1.0,
        semi_supervised=False,
        assignment="soft",
        accelerate=None,
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
        self.weights_prior = weights_prior
        self.semi_supervised = semi_supervised
        self.assignment = assignment
        self.accelerate = accelerate

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True
        return tags


_MISSING_PARAMETER = """missing : {'error', 'em'}, default='error'
        jaxem extension: what NaN in ``X`` means. 'error': scikit-learn's "Input
        contains NaN". 'em': NaN entries are missing at random (%s); a row's
        likelihood is that of its observed entries alone, and the M-step counts
        every feature over its observed entries only. :meth:`predict`,
        :meth:`predict_proba`, :meth:`score_samples` and :meth:`score` then take
        missing entries too, and :meth:`impute` fills them. A row or, in ``fit``,
        a feature with nothing observed is an error."""


class _MissingEntries(_DiscreteMixture):
    """A discrete mixture whose family can skip missing entries (``missing='em'``)."""

    _parameter_constraints: dict = {
        **_COMMON_CONSTRAINTS,
        "missing": [StrOptions({"error", "em"})],
    }

    def _fill(self, resp) -> np.ndarray:
        """``(n, D)`` values for missing entries from the posteriors ``resp``."""
        raise NotImplementedError

    @in_fitted_precision
    def impute(self, X):
        """``X`` with its missing entries (NaN) filled from the posterior over the
        components given each row's observed entries (jaxem extension).

        Works after any fit (``missing='em'`` or not). Observed entries are
        returned unchanged.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            NaN marks a missing entry; every row needs an observed one.

        Returns
        -------
        X_imputed : ndarray of shape (n_samples, n_features)
        """
        X, x, dtype, offset = EMEstimator._evaluation_input(self, X, allow_nan=True)
        model = self._model_for(self._n_components_fitted(), X.shape[0])
        # The fitted parameters with a family that skips the missing entries.
        model = dataclasses.replace(model, family=dataclasses.replace(model.family, missing=True))
        self._check_support(X, model.family)
        params = model.pad(self._fitted_params(offset, dtype))
        resp = engine.evaluate(model, params, x, "predict_proba")
        resp = np.asarray(resp, np.float64)[:, : self._n_components_fitted()]
        return np.where(np.isnan(X), self._fill(resp), X).astype(X.dtype, copy=False)


class PoissonMixture(_DiscreteMixture):
    __doc__ = f"""Mixture of independent Poisson counts, fitted by batched EM.

    Every component has a rate per feature; ``X`` holds non-negative integer counts
    (float or integer dtype).

    Parameters
    ----------
    {_COMMON_PARAMETERS}

    Attributes
    ----------
    {_COMMON_ATTRIBUTES}
    rates_ : ndarray of shape (n_components, n_features)
        The Poisson rate of every feature in every component.

    Examples
    --------
    >>> import numpy as np
    >>> from jaxem import PoissonMixture
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.poisson(2.0, (200, 3)), rng.poisson(12.0, (200, 3))])
    >>> pm = PoissonMixture(n_components=2, random_state=0).fit(X)
    >>> print(np.sort(pm.rates_.mean(axis=1)).round(0))
    [ 2. 12.]
    >>> pm.predict([[1, 2, 3], [11, 14, 12]]).tolist() == [int(np.argmin(pm.rates_[:, 0])),
    ...                                                   int(np.argmax(pm.rates_[:, 0]))]
    True
    """

    def _family(self):
        return poisson()

    def _set_components(self, layout, offset, dtype):
        self.rates_ = np.asarray(layout["rates"], np.float64).astype(dtype)

    def _component_layout(self, offset):
        return {"rates": np.asarray(self.rates_, np.float64)}

    def _sample_components(self, rng, counts):
        rates = np.asarray(self.rates_, np.float64)
        return np.vstack(
            [rng.poisson(rate, (int(count), rates.shape[1])) for rate, count in zip(rates, counts)]
        )


class BernoulliMixture(_MissingEntries):
    __doc__ = f"""Mixture of independent Bernoulli (binary) features, fitted by batched EM.

    ``X`` holds 0 and 1 (boolean, integer or float), or any values with
    ``binarize`` set.

    Parameters
    ----------
    {_COMMON_PARAMETERS}
    binarize : float or None, default=None
        None: ``X`` must hold only 0 and 1 (anything else raises ``ValueError``).
        A float: values above it are 1, the others 0 (as ``BernoulliNB``'s
        ``binarize``, whose default is 0.0).
    {_MISSING_PARAMETER % "every feature independently, given the component"}

    Attributes
    ----------
    {_COMMON_ATTRIBUTES}
    probabilities_ : ndarray of shape (n_components, n_features)
        The probability of a 1 of every feature in every component.

    Examples
    --------
    >>> import numpy as np
    >>> from jaxem import BernoulliMixture
    >>> rng = np.random.default_rng(0)
    >>> profiles = np.array([[0.9, 0.9, 0.1, 0.1], [0.1, 0.1, 0.9, 0.9]])
    >>> X = (rng.random((400, 4)) < profiles[np.arange(400) % 2]).astype(int)
    >>> bm = BernoulliMixture(n_components=2, random_state=0).fit(X)
    >>> print(bm.probabilities_[np.argsort(bm.probabilities_[:, 0])].round(1))
    [[0.1 0.1 0.9 0.9]
     [0.9 0.9 0.1 0.1]]

    With a tenth of the entries missing (``impute`` gives the posterior
    probability of a 1):

    >>> X_missing = np.where(rng.random(X.shape) < 0.1, np.nan, X)
    >>> X_missing[0] = [1, 1, np.nan, np.nan]
    >>> bm = BernoulliMixture(n_components=2, missing="em", random_state=0).fit(X_missing)
    >>> fitted = bm.probabilities_[np.argsort(bm.probabilities_[:, 0])[::-1]]
    >>> bool(np.abs(fitted - profiles).max() < 0.1)
    True
    >>> print(bm.impute(X_missing[:1]).round(2))
    [[1.   1.   0.06 0.1 ]]
    """

    _parameter_constraints: dict = {
        **_MissingEntries._parameter_constraints,
        "binarize": [Real, None],
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
        binarize=None,
        weights_prior=1.0,
        semi_supervised=False,
        assignment="soft",
        missing="error",
        accelerate=None,
    ):
        super().__init__(
            n_components,
            tol=tol,
            max_iter=max_iter,
            n_init=n_init,
            init_params=init_params,
            random_state=random_state,
            warm_start=warm_start,
            verbose=verbose,
            verbose_interval=verbose_interval,
            weights_prior=weights_prior,
            semi_supervised=semi_supervised,
            assignment=assignment,
            accelerate=accelerate,
        )
        self.binarize = binarize
        self.missing = missing

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # With binarize set, any real values are accepted (thresholded).
        tags.input_tags.positive_only = self.binarize is None
        return tags

    def _family(self):
        return bernoulli(missing=self._accepts_missing())

    def _centred(self, X, offset, dtype):
        if self.binarize is not None:
            X = np.asarray(X)
            X = np.where(np.isnan(X), np.nan, X > self.binarize)  # NaN stays missing
        return super()._centred(X, offset, dtype)

    def _check_support(self, X, family=None):
        if self.binarize is None:
            (family or self._family()).check_data(X)
        elif family is not None or self._accepts_missing():
            check_observed_rows(np.isnan(X))

    def _fill(self, resp):
        """The posterior probability of a 1."""
        return resp @ np.asarray(self.probabilities_, np.float64)

    def _set_components(self, layout, offset, dtype):
        self.probabilities_ = np.asarray(layout["probabilities"], np.float64).astype(dtype)

    def _component_layout(self, offset):
        return {"probabilities": np.asarray(self.probabilities_, np.float64)}

    def _layout_shape(self, attribute, n_components, n_features):
        return (n_components, n_features)

    def _sample_components(self, rng, counts):
        probs = np.asarray(self.probabilities_, np.float64)
        return np.vstack(
            [rng.random((int(count), probs.shape[1])) < p for p, count in zip(probs, counts)]
        ).astype(np.float64)


class CategoricalMixture(_MissingEntries):
    __doc__ = f"""Latent class analysis: a mixture over several categorical columns.

    Within a component the columns are independent, column ``d`` a categorical over
    its ``n_categories_[d]`` categories; ``X`` holds integer codes ``0, 1, ...``
    (integer dtype, or floats that are whole numbers).

    Parameters
    ----------
    {_COMMON_PARAMETERS}
    n_categories : int, array-like of int of shape (n_features,) or None, default=None
        Number of categories of every column (an int: the same for all). None: the
        largest code of each column in the data passed to ``fit``, plus one.
    {_MISSING_PARAMETER % "NaN or a negative code such as -1"}

    Attributes
    ----------
    {_COMMON_ATTRIBUTES}
    n_categories_ : ndarray of shape (n_features,)
        Number of categories of every column.
    probabilities_ : ndarray of shape (n_components, n_features, max(n_categories_))
        The probability of every category of every column in every component; 0
        past a column's number of categories.

    Examples
    --------
    >>> import numpy as np
    >>> from jaxem import CategoricalMixture
    >>> rng = np.random.default_rng(0)
    >>> labels = np.arange(1000) % 2
    >>> profiles = np.array([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]])  # of codes 0, 1, 2
    >>> codes = [(rng.random((1000, 1)) > np.cumsum(profiles[labels], 1)).sum(1)
    ...          for _ in range(3)]
    >>> X = np.column_stack(codes + [rng.random(1000) < np.where(labels, 0.9, 0.1)])
    >>> lca = CategoricalMixture(n_components=2, n_init=2, random_state=0).fit(X)
    >>> lca.n_categories_.tolist(), lca.probabilities_.shape
    ([3, 3, 3, 2], (2, 4, 3))
    >>> order = np.argsort(lca.probabilities_[:, 0, 0])[::-1]
    >>> print(lca.probabilities_[order, 0].round(1))
    [[0.8 0.1 0.1]
     [0.1 0.1 0.8]]
    >>> print(lca.probabilities_[order, 3].round(1))  # two categories: the third is 0
    [[0.9 0.1 0. ]
     [0.1 0.9 0. ]]
    """

    _parameter_constraints: dict = {
        **_MissingEntries._parameter_constraints,
        "n_categories": [Interval(Integral, 1, None, closed="left"), "array-like", None],
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
        n_categories=None,
        weights_prior=1.0,
        semi_supervised=False,
        assignment="soft",
        missing="error",
        accelerate=None,
    ):
        super().__init__(
            n_components,
            tol=tol,
            max_iter=max_iter,
            n_init=n_init,
            init_params=init_params,
            random_state=random_state,
            warm_start=warm_start,
            verbose=verbose,
            verbose_interval=verbose_interval,
            weights_prior=weights_prior,
            semi_supervised=semi_supervised,
            assignment=assignment,
            accelerate=accelerate,
        )
        self.n_categories = n_categories
        self.missing = missing

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.categorical = True
        return tags

    def _family(self):
        categories = tuple(int(count) for count in self.n_categories_)
        return categorical(
            max(categories), n_categories=categories, missing=self._accepts_missing()
        )

    def _check_support(self, X, family=None):
        (family or self._family()).check_data(X)

    def _fit_support(self, X):
        self.n_categories_ = self._categories_for(X)
        if self._accepts_missing():  # a negative code is missing too
            _validation.check_observed_columns(np.where(X < 0, np.nan, X))
        self._check_support(X)

    def _fill(self, resp):
        """The most probable category under the posterior mixture of the components."""
        probs = np.einsum("nk,kds->nds", resp, np.asarray(self.probabilities_, np.float64))
        return np.argmax(probs, axis=-1).astype(np.float64)

    def _categories_for(self, X) -> np.ndarray:
        """``n_categories_`` for fitting ``X``: the parameter's, or the data's."""
        n_features = X.shape[1]
        if self.n_categories is None:
            # Codes are checked by the family next; here only the largest counts.
            finite = np.where(np.isfinite(X), X, 0)
            return np.maximum(np.max(finite, axis=0), 0).astype(np.int64) + 1
        categories = np.asarray(self.n_categories)
        if categories.ndim == 0:
            return np.full(n_features, int(categories), np.int64)
        if categories.shape != (n_features,) or categories.dtype.kind not in "iu":
            raise ValueError(
                f"n_categories must be an int or {n_features} ints (one per column of X), "
                f"got {self.n_categories!r}."
            )
        if np.any(categories < 1):
            raise ValueError(f"n_categories must be positive, got {self.n_categories!r}.")
        return categories.astype(np.int64)

    def _set_components(self, layout, offset, dtype):
        self.probabilities_ = np.asarray(layout["probabilities"], np.float64).astype(dtype)

    def _component_layout(self, offset):
        return {"probabilities": np.asarray(self.probabilities_, np.float64)}

    def _layout_shape(self, attribute, n_components, n_features):
        return (n_components, n_features, int(np.max(self.n_categories_)))

    def _sample_components(self, rng, counts):
        probs = np.asarray(self.probabilities_, np.float64)
        n_features, n_symbols = probs.shape[1:]
        blocks = []
        for component, count in zip(probs, counts):
            # One inverse-CDF draw per row and column.
            cumulative = np.cumsum(component / component.sum(-1, keepdims=True), axis=-1)
            uniform = rng.random((int(count), n_features, 1))
            codes = np.minimum(np.sum(uniform >= cumulative[None], axis=-1), n_symbols - 1)
            blocks.append(codes)
        return np.vstack(blocks).astype(np.float64)


class MultinomialMixture(_DiscreteMixture):
    __doc__ = f"""Mixture of multinomials over count features (bag of words), by batched EM.

    Every row holds the counts of ``n_features`` categories (words of a
    vocabulary in a document); every component is a probability vector over them.
    The row totals may differ and say nothing about the component.

    Parameters
    ----------
    {_COMMON_PARAMETERS}

    Attributes
    ----------
    {_COMMON_ATTRIBUTES}
    probabilities_ : ndarray of shape (n_components, n_features)
        The probability of every category (word) in every component.
    n_trials_ : int
        The median row total of the training data: the total of every row drawn
        by :meth:`sample`.

    Examples
    --------
    >>> import numpy as np
    >>> from jaxem import MultinomialMixture
    >>> rng = np.random.default_rng(0)
    >>> topics = np.array([[0.4, 0.4, 0.1, 0.1], [0.1, 0.1, 0.4, 0.4]])
    >>> X = np.stack([rng.multinomial(rng.integers(20, 60), topics[i % 2]) for i in range(300)])
    >>> mm = MultinomialMixture(n_components=2, random_state=0).fit(X)
    >>> print(mm.probabilities_[np.argsort(mm.probabilities_[:, 0])].round(1))
    [[0.1 0.1 0.4 0.4]
     [0.4 0.4 0.1 0.1]]
    """

    def _family(self):
        return multinomial()

    def _fit_support(self, X):
        self._check_support(X)
        self.n_trials_ = int(np.median(np.sum(X, axis=1)))

    def _set_components(self, layout, offset, dtype):
        self.probabilities_ = np.asarray(layout["probabilities"], np.float64).astype(dtype)

    def _component_layout(self, offset):
        return {"probabilities": np.asarray(self.probabilities_, np.float64)}

    def _layout_shape(self, attribute, n_components, n_features):
        return (n_components, n_features)

    def _sample_components(self, rng, counts):
        probs = np.asarray(self.probabilities_, np.float64)
        probs = probs / probs.sum(axis=1, keepdims=True)
        return np.vstack(
            [rng.multinomial(self.n_trials_, p, size=int(count)) for p, count in zip(probs, counts)]
        ).astype(np.float64)
