"""``jaxem.MiniBatchKMeans``: a drop-in for :class:`sklearn.cluster.MiniBatchKMeans`.

The estimator validates input as :class:`jaxem.KMeans` does (it shares its base),
seeds the centres on random subsets of ``init_size`` rows with the engine's
k-means++ or random seeding (the best of ``n_init`` on a validation subset), then
runs the mini-batch steps on the device: the batches' row indices are drawn on the
host, a block of steps at a time, and each block is one ``lax.scan`` of the
model's :meth:`~jaxem.KMeansModel.minibatch_fit_step` (assignment, per-centre
counts, the centre update with learning rate ``batch weight / count``, low-count
reassignment, scikit-learn's early stopping) in :func:`jaxem.engine.minibatch_fit`.
"""

from __future__ import annotations

import math
import warnings
from numbers import Integral, Real

import jax
import numpy as np
import scipy.sparse as sp
from sklearn.base import _fit_context
from sklearn.utils import check_array, check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight

from jaxem import engine
from jaxem.estimators import _validation
from jaxem.estimators._base import in_input_precision
from jaxem.estimators.kmeans import _CentroidEstimator, _dense_rows
from jaxem.models.kmeans import (
    KMeansParams,
    MiniBatchFitState,
    MiniBatchOptions,
    MiniBatchState,
    kmeans,
)

__all__ = ["MiniBatchKMeans"]

#: Most mini-batch steps in one program call: the host draws the next block's row
#: indices while the device runs this one, and reads the stopping flag once a block.
_BLOCK_STEPS = 256


class MiniBatchKMeans(_CentroidEstimator):
    """Mini-batch k-means on the device; a drop-in for scikit-learn's.

    Same parameters, defaults, fitted attributes, methods, warnings and error
    messages as :class:`sklearn.cluster.MiniBatchKMeans`. The mini-batch steps run
    in blocks of up to 256 steps, each block one compiled ``lax.scan`` over batches
    drawn beforehand, so the host does not intervene at every step.

    Parameters
    ----------
    n_clusters : int, default=8
        The number of clusters and centres.
    init : {'k-means++', 'random'}, callable or array-like of shape \
(n_clusters, n_features), default='k-means++'
        Seeding, on a random subset of ``init_size`` rows: greedy k-means++, distinct
        rows drawn with probability proportional to ``sample_weight``, the given
        centres, or ``init(X_subset, n_clusters, random_state=random_state)``.
    max_iter : int, default=100
        Passes over the data: the fit runs at most ``max_iter * n_samples //
        batch_size`` steps.
    batch_size : int, default=1024
        Rows per mini-batch (at most ``n_samples``).
    verbose : int, default=0
        Print scikit-learn's lines ("Init i/n with method ...", "Minibatch step
        i/n: mean batch inertia: ..., ewa inertia: ...", "[MiniBatchKMeans]
        Reassigning k cluster centers.", "Converged (...) at step i/n") after each
        block of steps, from the steps' records.
    compute_labels : bool, default=True
        Compute ``labels_`` and ``inertia_`` on all rows after the fit (and on the
        batch after :meth:`partial_fit`).
    random_state : int, RandomState instance or None, default=None
        Seeds the subsets, the seeding, the batches and the reassignments.
    tol : float, default=0.0
        Stop when the summed squared centre change of a step is at most ``tol``
        times the mean per-feature variance of ``X`` (0: off).
    max_no_improvement : int or None, default=10
        Stop when the smoothed batch inertia has not improved for this many steps
        (None: off).
    init_size : int or None, default=None
        Rows of the seeding subsets; None means ``3 * batch_size`` (at least
        ``3 * n_clusters``), at most ``n_samples``.
    n_init : 'auto' or int, default='auto'
        Seedings tried; the one of lowest inertia on a validation subset of
        ``init_size`` rows is kept. 'auto': 1 for 'k-means++' or an array, 3 for
        'random' or a callable.
    reassignment_ratio : float, default=0.01
        Centres with a count below this fraction of the largest are moved onto
        random rows of the batch (when a count is 0, or every ``10 * n_clusters``
        rows).

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
    labels_ : ndarray of shape (n_samples,), int32
        Cluster of every row (of the last batch after :meth:`partial_fit`), if
        ``compute_labels``.
    inertia_ : float
        Weighted inertia of the rows with the final centres if ``compute_labels``,
        else the smoothed batch inertia times the total weight.
    n_iter_ : int
        Passes over the data started.
    n_steps_ : int
        Mini-batch steps run.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)

    See Also
    --------
    jaxem.KMeans : full-batch k-means.

    Notes
    -----
    **Algorithm** (scikit-learn's). Each step draws ``batch_size`` rows with
    replacement, with probability proportional to ``sample_weight``; every row goes
    to its nearest centre; a centre with count ``n`` receiving ``m`` rows of sum
    ``s`` moves to ``(n c + s) / (n + m)`` and its count becomes ``n + m``.
    Reassignment: see ``reassignment_ratio``; at most half a batch of centres, the
    lowest counts first, moves to distinct rows of the batch, and their counts
    become the smallest count of the others. Early stopping: the first step's
    inertia is ignored; the mean batch inertia is smoothed with weight
    ``min(1, 2 batch_size / (n_samples + 1))``; ``tol`` and ``max_no_improvement``
    as above; ``n_steps_`` is the step at which the fit stopped.

    **Differences from scikit-learn.** The random numbers differ: the batches come
    from ``random_state`` as in scikit-learn but through jaxem's own draw, the
    seeding and the reassigned rows from JAX's generator, so a given
    ``random_state`` gives another (equally good) fit. As :class:`jaxem.KMeans`,
    features far from the origin (``|mean| > 10 std``) are centred before fitting.

    **Precision** follows ``X`` as in scikit-learn (float32 in float32, the rest in
    float64); :meth:`partial_fit` after a fit keeps the fitted precision.

    Examples
    --------
    >>> import numpy as np
    >>> from jaxem import MiniBatchKMeans
    >>> X = np.array([[1, 2], [1, 4], [1, 0], [4, 2], [4, 0], [4, 4],
    ...               [4, 5], [0, 1], [2, 2], [3, 2], [5, 5], [1, -1]])
    >>> km = MiniBatchKMeans(n_clusters=2, batch_size=6, random_state=0, n_init="auto")
    >>> km = km.partial_fit(X[0:6]).partial_fit(X[6:12])
    >>> km.cluster_centers_.shape, km.n_steps_
    ((2, 2), 2)
    >>> km = MiniBatchKMeans(n_clusters=2, batch_size=6, max_iter=10, random_state=0).fit(X)
    >>> labels = km.predict([[0, 0], [4, 4]])
    >>> bool(labels[0] != labels[1])
    True
    """

    _default_n_init = 3

    _parameter_constraints: dict = {
        "n_clusters": [Interval(Integral, 1, None, closed="left")],
        "init": [StrOptions({"k-means++", "random"}), callable, "array-like"],
        "n_init": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "random_state": ["random_state"],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "compute_labels": ["boolean"],
        "max_no_improvement": [Interval(Integral, 0, None, closed="left"), None],
        "init_size": [Interval(Integral, 1, None, closed="left"), None],
        "reassignment_ratio": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(
        self,
        n_clusters=8,
        *,
        init="k-means++",
        max_iter=100,
        batch_size=1024,
        verbose=0,
        compute_labels=True,
        random_state=None,
        tol=0.0,
        max_no_improvement=10,
        init_size=None,
        n_init="auto",
        reassignment_ratio=0.01,
    ):
        self.n_clusters = n_clusters
        self.init = init
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.verbose = verbose
        self.compute_labels = compute_labels
        self.random_state = random_state
        self.tol = tol
        self.max_no_improvement = max_no_improvement
        self.init_size = init_size
        self.n_init = n_init
        self.reassignment_ratio = reassignment_ratio

    # -- input ---------------------------------------------------------------------------
    def _fit_input(self, X, *, reset):
        """``(X, x, dtype, variances)``: validated ``X``, its rows centred in ``dtype``
        (sparse ``X`` densified a block at a time), and the per-feature variances."""
        if sp.issparse(X):
            X = self._check_sparse(X, reset=reset)
        else:
            X = _validation.check_data(self, X, reset=reset)
        dtype = _validation.compute_dtype(X.dtype)
        if reset:
            self._fit_offset = self._sparse_aware_centre(X)
        offset = self._offset(X.shape[1])
        if sp.issparse(X):
            x, variances = _dense_rows(X, lambda rows: self._centred(rows, offset, dtype), dtype)
        else:
            x = self._centred(X, offset, dtype)
            variances = np.var(X, axis=0, dtype=np.float64)
        return X, x, dtype, variances

    def _sparse_aware_centre(self, X):
        if not sp.issparse(X):
            return self._centre(X)
        mean = np.asarray(X.mean(axis=0, dtype=np.float64)).ravel()
        squares = np.asarray(X.multiply(X).mean(axis=0, dtype=np.float64)).ravel()
        spread = np.sqrt(np.maximum(squares - mean * mean, 0.0))
        return np.where(np.abs(mean) > 10.0 * spread, mean, 0.0)

    def _check_params_vs_input(self, n_samples):
        """scikit-learn's derived sizes: ``_n_init``, ``_batch_size``, ``_init_size``."""
        n_clusters = int(self.n_clusters)
        if n_samples < n_clusters:
            raise ValueError(f"n_samples={n_samples} should be >= n_clusters={n_clusters}.")
        self._n_init = self._resolve_n_init()
        self._batch_size = min(int(self.batch_size), n_samples)
        init_size = self.init_size
        if init_size is None:
            init_size = 3 * self._batch_size
            if init_size < n_clusters:
                init_size = 3 * n_clusters
        elif init_size < n_clusters:
            warnings.warn(
                f"init_size={init_size} should be larger than n_clusters={n_clusters}. "
                "Setting it to min(3*n_clusters, n_samples)",
                RuntimeWarning,
                stacklevel=4,
            )
            init_size = 3 * n_clusters
        self._init_size = min(int(init_size), n_samples)

    def _init_array(self, X):
        """A validated array ``init`` in ``X``'s dtype, or None."""
        if self._init_name() != "array":
            return None
        centers = check_array(self.init, dtype=X.dtype, copy=True, order="C")
        self._check_center_shape(X, centers)
        return centers

    # -- seeding -------------------------------------------------------------------------
    def _seed(self, X, x, weights, init_array, random_state, model):
        """One seeding, on a random subset of ``_init_size`` rows (all rows when that is
        every row): centred ``(K, D)`` centres in ``x``'s dtype."""
        n_samples = x.shape[0]
        subset = slice(None)
        if self._init_size < n_samples:
            subset = random_state.randint(0, n_samples, self._init_size)
        name = self._init_name()
        offset = self._offset(x.shape[1])
        if name == "array":
            centers = init_array
        elif name == "callable":
            centers = self.init(X[subset], int(self.n_clusters), random_state=random_state)
            centers = check_array(centers, dtype=X.dtype, copy=False, order="C")
            self._check_center_shape(X, centers)
        elif name == "random":
            # Distinct rows, drawn as scikit-learn draws them from ``random_state``.
            subset_weights = np.asarray(weights[subset], np.float64)
            rows = random_state.choice(
                len(subset_weights),
                size=int(self.n_clusters),
                replace=False,
                p=subset_weights / subset_weights.sum(),
            )
            return np.asarray(x[subset][rows], x.dtype)
        else:
            params = engine.initialise(
                model,
                x[subset],
                key=_validation.random_key(random_state),
                n_restarts=1,
                weights=weights[subset],
            )
            return np.asarray(params.centers[0], x.dtype)
        return np.asarray(np.asarray(centers, np.float64) - offset, x.dtype)

    def _best_seed(self, X, x, weights, random_state, model):
        """scikit-learn's choice among ``_n_init`` seedings: the lowest weighted inertia
        on a validation subset of ``_init_size`` rows drawn first."""
        init_array = self._init_array(X)
        validation = random_state.randint(0, x.shape[0], self._init_size)
        candidates = []
        for index in range(self._n_init):
            if self.verbose:
                print(f"Init {index + 1}/{self._n_init} with method {self.init}")
            candidates.append(self._seed(X, x, weights, init_array, random_state, model))
        if len(candidates) == 1 and not self.verbose:
            return candidates[0]
        stacked = KMeansParams(np.stack(candidates))
        squared = engine.evaluate(
            model, stacked, x[validation], "nearest_squared_distance", restarts=True
        )
        inertias = np.asarray(squared, np.float64) @ weights[validation].astype(np.float64)
        if self.verbose:
            for index, inertia in enumerate(inertias):
                print(f"Inertia for init {index + 1}/{self._n_init}: {inertia}")
        inertias = np.where(np.isfinite(inertias), inertias, np.inf)
        return candidates[int(np.argmin(inertias))]

    def _model(self):
        init = "random" if self._init_name() == "random" else "k-means++"
        return kmeans(int(self.n_clusters), init=init)

    # -- fitting -------------------------------------------------------------------------
    @in_input_precision
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, sample_weight=None):
        """Compute the centres by mini-batch steps over ``X``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Training rows.
        y : Ignored
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights: batches draw rows with probability proportional
            to them, and the seeding uses them.

        Returns
        -------
        self : MiniBatchKMeans
            The fitted estimator.
        """
        X, x, dtype, variances = self._fit_input(X, reset=True)
        n_samples = x.shape[0]
        self._check_params_vs_input(n_samples)
        sample_weight = _check_sample_weight(
            sample_weight, X, dtype=X.dtype, ensure_non_negative=True
        )
        total_weight = float(np.sum(sample_weight, dtype=np.float64))  # > 0: checked
        weights = np.asarray(sample_weight, dtype)
        random_state = check_random_state(self.random_state)
        model = self._model()
        centers = self._best_seed(X, x, weights, random_state, model)

        batch_size = self._batch_size
        n_steps = (int(self.max_iter) * n_samples) // batch_size
        tol = float(self.tol) * float(np.mean(variances)) if self.tol > 0 else 0.0
        no_improvement = self.max_no_improvement
        options = MiniBatchOptions(
            reassignment_ratio=np.asarray(self.reassignment_ratio, dtype),
            tol=np.asarray(tol, dtype),
            ewa_alpha=np.asarray(min(batch_size * 2.0 / (n_samples + 1), 1.0), dtype),
            max_no_improvement=np.int32(
                np.iinfo(np.int32).max if no_improvement is None else no_improvement
            ),
            batch_size=np.asarray(batch_size, dtype),
        )
        start = MiniBatchFitState(
            MiniBatchState(centers, np.zeros(len(centers), dtype), np.int32(0)),
            ewa=np.asarray(0.0, dtype),
            ewa_min=np.asarray(np.inf, dtype),
            no_improvement=np.int32(0),
            step=np.int32(0),
            stopped=np.bool_(False),
        )
        probabilities = np.asarray(sample_weight, np.float64)
        cdf = np.cumsum(probabilities / probabilities.sum())
        cdf /= cdf[-1]
        blocks = _batches(cdf, n_steps, batch_size, random_state, options)
        fit, records = engine.minibatch_fit(model, x, start, blocks)
        self.n_steps_ = int(fit.step)
        self.n_iter_ = int(math.ceil(self.n_steps_ * batch_size / n_samples))
        if self.verbose:
            _print_steps(records, n_steps)

        offset = self._offset(x.shape[1])
        self.cluster_centers_ = (np.asarray(fit.state.centers, np.float64) + offset).astype(dtype)
        self._counts = np.asarray(fit.state.counts, dtype)
        self._n_since_last_reassign = int(fit.state.since_reassign)
        self._n_features_out = int(self.n_clusters)
        del x
        if self.compute_labels:
            labels, squared = self._evaluate(X, ("predict", "nearest_squared_distance"))
            self.labels_ = labels
            self.inertia_ = float(np.dot(squared.astype(np.float64), sample_weight))
        else:
            ewa = float(fit.ewa) if self.n_steps_ > 1 else float(records.batch_inertia[-1])
            self.inertia_ = ewa * total_weight
        return self

    @in_input_precision
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None, sample_weight=None):
        """Update the centres with one mini-batch step on ``X``.

        The first call seeds the centres on ``X`` (one seeding, on ``init_size``
        of its rows); later calls keep the fitted precision.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The batch.
        y : Ignored
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weight of every row of the batch.

        Returns
        -------
        self : MiniBatchKMeans
            The updated estimator.
        """
        fitted = hasattr(self, "cluster_centers_")
        with _validation.precision(self._stored_dtype() if fitted else None):
            return self._partial_fit(X, sample_weight, fitted)

    def _partial_fit(self, X, sample_weight, fitted):
        X, x, dtype, _ = self._fit_input(X, reset=not fitted)
        if fitted:
            dtype = self._fitted_dtype()
            x = np.asarray(x, dtype)
        self._random_state = getattr(self, "_random_state", None) or check_random_state(
            self.random_state
        )
        sample_weight = _check_sample_weight(
            sample_weight, X, dtype=X.dtype, ensure_non_negative=True
        )
        weights = np.asarray(sample_weight, dtype)
        self.n_steps_ = getattr(self, "n_steps_", 0)
        model = self._model()
        offset = self._offset(x.shape[1])
        if not fitted:
            self._check_params_vs_input(x.shape[0])
            init_array = self._init_array(X)
            centers = self._seed(X, x, weights, init_array, self._random_state, model)
            counts = np.zeros(len(centers), dtype)
            since = 0
        else:
            centers = np.asarray(np.asarray(self.cluster_centers_, np.float64) - offset, dtype)
            counts, since = np.asarray(self._counts, dtype), self._n_since_last_reassign
        state = MiniBatchState(centers, counts, np.int32(since))
        state, _, n_reassigned, _ = engine.minibatch_step(
            model,
            state,
            x,
            weights,
            increment=self._batch_size,
            key=jax.random.fold_in(_peek_key(self._random_state), self.n_steps_),
            ratio=self.reassignment_ratio,
        )
        if self.verbose and int(n_reassigned):
            print(f"[MiniBatchKMeans] Reassigning {int(n_reassigned)} cluster centers.")
        self.cluster_centers_ = (np.asarray(state.centers, np.float64) + offset).astype(dtype)
        self._counts = np.asarray(state.counts, dtype)
        self._n_since_last_reassign = int(state.since_reassign)
        self._n_features_out = int(self.n_clusters)
        if self.compute_labels:
            labels, squared = self._evaluate(X, ("predict", "nearest_squared_distance"))
            self.labels_ = labels
            self.inertia_ = float(np.dot(squared.astype(np.float64), sample_weight))
        self.n_steps_ += 1
        return self


def _batches(cdf, n_steps, batch_size, random_state, options):
    """Blocks ``(indices, active, key, options)`` of the fit's batches.

    Row indices are drawn with replacement with probability ``diff(cdf)``, by
    inverse-CDF sampling of ``random_state.random_sample`` draws: the numbers
    ``random_state.choice(n, batch_size, p=...)`` would give, step after step, so a
    float64 fit draws scikit-learn's batches (and float32 and float64 fits the same
    ones). The reassignments' key comes from ``random_state``'s state without
    advancing it. ``_BLOCK_STEPS`` steps a block (fewer, a power of two, for short
    fits); the last block is padded with inactive steps.
    """
    block = min(_BLOCK_STEPS, 1 << max(n_steps - 1, 0).bit_length())
    last = len(cdf) - 1
    key = _peek_key(random_state)
    for number, first in enumerate(range(0, n_steps, block)):
        count = min(block, n_steps - first)
        uniform = random_state.random_sample((count, batch_size))
        indices = np.zeros((block, batch_size), np.int32)
        indices[:count] = np.minimum(np.searchsorted(cdf, uniform, side="right"), last)
        active = np.arange(block) < count
        yield indices, active, jax.random.fold_in(key, number), options


def _peek_key(random_state):
    """A JAX key from ``random_state``'s state, leaving the state as it was (the draws
    that follow are the ones scikit-learn would make)."""
    _, words, position, *_ = random_state.get_state()
    seed = int(np.bitwise_xor.reduce(np.asarray(words, np.uint32))) ^ int(position)
    return _validation.key_from_seed(seed & 0x7FFFFFFF)


def _print_steps(records, n_steps):
    """scikit-learn's per-step verbose lines from the steps' records."""
    for index in range(len(records.batch_inertia)):
        step = index + 1
        if records.n_reassigned[index]:
            print(f"[MiniBatchKMeans] Reassigning {records.n_reassigned[index]} cluster centers.")
        inertia = records.batch_inertia[index]
        if step == 1:
            print(f"Minibatch step {step}/{n_steps}: mean batch inertia: {inertia}")
            continue
        print(
            f"Minibatch step {step}/{n_steps}: mean batch inertia: {inertia}, "
            f"ewa inertia: {records.ewa[index]}"
        )
        if records.stop_reason[index] == 1:
            print(f"Converged (small centers change) at step {step}/{n_steps}")
        elif records.stop_reason[index] == 2:
            print(f"Converged (lack of improvement in inertia) at step {step}/{n_steps}")
