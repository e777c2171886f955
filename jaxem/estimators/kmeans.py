"""``jaxem.KMeans``: a drop-in for :class:`sklearn.cluster.KMeans`.

The estimator validates numpy input, runs all ``n_init`` initialisations as
batched restarts of one :func:`jaxem.fit` call over the :func:`jaxem.kmeans`
model (Lloyd's algorithm as hard EM), finishes with a final assignment step from
every restart's final centres, keeps the restart of lowest inertia and stores
scikit-learn's fitted attributes.

Sparse input (any scipy.sparse format, converted to CSR as scikit-learn does) is
densified a block of rows at a time on its way to the device: the E-step works
on dense rows, and the host never holds a second full copy.
"""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
from sklearn.base import (
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_array, check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import (
    _check_sample_weight,
    _is_arraylike_not_scalar,
    _num_samples,
    validate_data,
)

from jaxem import engine
from jaxem.contract import Status
from jaxem.estimators import _validation
from jaxem.estimators._base import (
    MESH_CONSTRAINT,
    EMEstimator,
    component_bucket,
    in_fitted_precision,
    in_input_precision,
)
from jaxem.models.kmeans import KMeansParams, kmeans

__all__ = ["KMeans"]

#: Elements of sparse input densified at a time (32 MiB of float64): the host memory
#: that densifying needs beyond the dense array the device receives.
_SPARSE_BLOCK_ELEMENTS = 1 << 22


class _CentroidEstimator(
    ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClusterMixin, EMEstimator
):
    """What :class:`KMeans` and :class:`jaxem.MiniBatchKMeans` share: the ``init``
    checks, the ``n_init`` rule, sparse input, and everything after the fit
    (``predict``, ``transform``, ``score``, ``fit_predict``, ``fit_transform``) from
    ``cluster_centers_`` and the centring offset."""

    #: ``n_init='auto'`` for a 'random' or callable ``init`` (scikit-learn's per class).
    _default_n_init = 10

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        tags.input_tags.sparse = True
        return tags

    @in_input_precision
    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit and return the cluster of every row; equal to ``fit(X).predict(X)``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : Ignored
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        return self.fit(X, sample_weight=sample_weight).labels_

    @in_input_precision
    def fit_transform(self, X, y=None, sample_weight=None):
        """Fit and return the distances of every row to every centre.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : Ignored
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        distances : ndarray of shape (n_samples, n_clusters)
        """
        self.fit(X, sample_weight=sample_weight)
        return self._distances(X)

    def _resolve_n_init(self) -> int:
        """scikit-learn's ``n_init`` rule, with its warning for an array ``init``."""
        if self.n_init == "auto":
            n_init = self._default_n_init if self._init_name() in ("random", "callable") else 1
        else:
            n_init = int(self.n_init)
        if self._init_name() == "array" and n_init != 1:
            warnings.warn(
                "Explicit initial center position passed: performing only one init in "
                f"{self.__class__.__name__} instead of n_init={n_init}.",
                RuntimeWarning,
                stacklevel=4,
            )
            n_init = 1
        return n_init

    def _init_name(self) -> str:
        if isinstance(self.init, str):
            return self.init
        return "array" if _is_arraylike_not_scalar(self.init) else "callable"

    def _check_center_shape(self, X, centers):
        if centers.shape[0] != self.n_clusters:
            raise ValueError(
                f"The shape of the initial centers {centers.shape} does not match "
                f"the number of clusters {self.n_clusters}."
            )
        if centers.shape[1] != X.shape[1]:
            raise ValueError(
                f"The shape of the initial centers {centers.shape} does not match "
                f"the number of features of the data {X.shape[1]}."
            )

    # -- the base's hooks --------------------------------------------------------------------
    _evaluation_outputs = ("predict", "nearest_squared_distance")
    _precision_attribute = "cluster_centers_"

    def _build_model(self, n_components, max_components):
        init = "random" if self._init_name() == "random" else "k-means++"
        return kmeans(n_components, init=init, max_clusters=max_components)

    def _n_components_fitted(self):
        return int(np.shape(self.cluster_centers_)[0])

    def _fitted_params(self, offset, dtype):
        centers = np.asarray(self.cluster_centers_, np.float64) - offset
        return KMeansParams(np.asarray(centers, dtype))

    def _check_sparse(self, X, *, reset):
        """scikit-learn's validation of sparse ``X``: any format to CSR, finite values."""
        return validate_data(
            self, X, reset=reset, accept_sparse="csr", dtype=[np.float64, np.float32]
        )

    def _check_test_data(self, X):
        if sp.issparse(X):
            return self._check_sparse(X, reset=False)
        return _validation.check_data(self, X, reset=False)

    def _evaluation_input(self, X):
        """The base's ``(X, x, dtype, offset)``; sparse ``X`` centred block by block."""
        if not sp.issparse(X):
            return super()._evaluation_input(X)
        _validation.check_fitted(self)
        X = self._check_sparse(X, reset=False)
        dtype = self._fitted_dtype()
        offset = self._offset(X.shape[1])
        x, _ = _dense_rows(X, lambda rows: self._centred(rows, offset, dtype), dtype)
        return X, x, dtype, offset

    # -- evaluation ------------------------------------------------------------------------
    @in_fitted_precision
    def predict(self, X):
        """Index of the nearest centre of every row (the lowest index on ties).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        labels : ndarray of shape (n_samples,), int32
        """
        return self._evaluate(X, "predict")

    @in_fitted_precision
    def transform(self, X):
        """Euclidean distance of every row to every centre.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        distances : ndarray of shape (n_samples, n_clusters)
        """
        return self._distances(X)

    def _distances(self, X):
        # Differences of (chunk, K, D) per chunk: size the chunks by K x D.
        _validation.check_fitted(self)
        n_clusters, n_features = np.shape(self.cluster_centers_)
        n_rows = _num_samples(X)
        chunk_size = engine.default_chunk_size(
            engine.padded_rows(n_rows), 1, component_bucket(n_clusters, n_rows) * n_features
        )
        distances = self._evaluate(X, "transform", chunk_size=chunk_size)
        return distances[:, :n_clusters]

    @in_fitted_precision
    def score(self, X, y=None, sample_weight=None):
        """Opposite of the (weighted) inertia of ``X`` with the fitted centres.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : Ignored
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        score : float
        """
        _validation.check_fitted(self)
        X = self._check_test_data(X)
        sample_weight = _check_sample_weight(sample_weight, X, dtype=X.dtype)
        squared = self._evaluate(X, "nearest_squared_distance")
        return -float(np.dot(squared.astype(np.float64), sample_weight))


class KMeans(_CentroidEstimator):
    """k-means clustering by batched Lloyd iterations; a drop-in for scikit-learn's.

    Same parameters, defaults, fitted attributes, methods, warnings and error
    messages as :class:`sklearn.cluster.KMeans`; the ``n_init`` initialisations run
    at once as batched restarts of one compiled program (:func:`jaxem.fit`), on
    CPU, GPU or TPU.

    Parameters
    ----------
    n_clusters : int, default=8
        The number of clusters and centres.
    init : {'k-means++', 'random'}, callable or array-like of shape \
(n_clusters, n_features), default='k-means++'
        Seeding: greedy k-means++ (sampling weighted by ``sample_weight``), distinct
        rows drawn with probability proportional to ``sample_weight``, the given
        centres, or ``init(X, n_clusters, random_state=random_state)`` called once
        per initialisation (``X`` is the centred data, as in scikit-learn).
    n_init : 'auto' or int, default='auto'
        Number of initialisations, run as batched restarts; the one of lowest final
        inertia is kept. ``'auto'`` means 1 for ``init='k-means++'`` or an array and
        10 for ``init='random'`` or a callable (scikit-learn 1.9's rule).
    max_iter : int, default=300
        Lloyd iterations per initialisation.
    tol : float, default=1e-4
        Relative tolerance: an initialisation stops when the summed squared shift of
        its centres is at most ``tol`` times the mean per-feature variance of ``X``,
        or when no label changes.
    verbose : int, default=0
        Print scikit-learn's lines for every initialisation after the batched run,
        from its trace: "Initialization complete", "Iteration i, inertia v." (the
        inertia of the centres before iteration i's update) and "Converged at
        iteration i: ...". The run does not record the final centre shift, so a
        convergence with ``tol > 0`` is reported as "center shift at most tol"
        (scikit-learn prints the shift, or "strict convergence" when no label
        changed); with ``tol=0`` it is "strict convergence".
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisations.
    copy_x : bool, default=True
        Accepted for compatibility and validated; jaxem never modifies ``X`` (the
        centred rows are a new array, copied to the device), so both values behave
        as scikit-learn's ``copy_x=True``.
    algorithm : {'lloyd', 'elkan'}, default='lloyd'
        Accepted for compatibility; both run Lloyd's algorithm and give exactly the
        same result (Elkan's triangle-inequality bounds only skip distance
        computations, and on accelerators the dense batched assignment step is
        faster than bound bookkeeping).
    mesh : None, int or jax.sharding.Mesh, default=None
        jaxem extension: devices to spread the fit over. An int splits the rows over
        that many devices; a ``Mesh`` with axes ``"rows"`` and/or ``"restarts"``
        splits the rows, the restarts, or both (see :func:`jaxem.fit`). The fitted
        model equals the one-device fit up to the rounding of sums. Initialisation
        and EM iterations run sharded; the final E-step and predictions run on one
        device. Not saved by ``save`` (a loaded estimator runs on one device).

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
        Coordinates of the cluster centres.
    labels_ : ndarray of shape (n_samples,), int32
        Cluster of every training row, from a final assignment with ``cluster_centers_``.
    inertia_ : float
        Sum of squared distances of the rows to their closest centre, weighted by
        ``sample_weight``.
    n_iter_ : int
        Iterations run by the kept initialisation.
    n_features_in_ : int
        Number of features seen during :meth:`fit`.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during :meth:`fit`, when ``X`` has string column names.

    See Also
    --------
    jaxem.kmeans : the functional model, for :func:`jaxem.fit`.

    Notes
    -----
    **Algorithm.** Each iteration assigns every row to its nearest centre (lowest
    index on ties) and moves each centre to the weighted mean of its rows; an
    empty cluster is re-seeded with the row farthest from its centre, as
    scikit-learn does. The data is centred (its mean subtracted) before fitting,
    as scikit-learn does, and :meth:`predict`, :meth:`transform` and :meth:`score`
    centre with the same offset.

    **Choosing the initialisation.** The engine tracks ``-inertia / total weight``
    of the centres *before* each iteration's update. The estimator therefore runs
    a final assignment step with every initialisation's final centres, keeps the
    one of lowest final inertia (ties to the lowest index), and computes
    ``labels_`` and ``inertia_`` from those centres, exactly as :meth:`predict` and
    :meth:`score` would; ``fit_predict(X)`` equals ``fit(X).predict(X)``.

    **Precision.** As in scikit-learn, float64 (and integer) ``X`` is computed and
    returned in float64, float32 ``X`` in float32, whatever JAX's global 64-bit
    flag says (it is set around jaxem's own calls only, and restored). Pass
    ``X.astype(np.float32)`` for float32's speed (4.7x faster on a 2-core CPU,
    ``benchmarks/RESULTS.md``).

    **Differences from scikit-learn.** Random initialisations use JAX's random
    generator, so for a given ``random_state`` they differ from scikit-learn's
    (fits from the same ``init`` array agree). A cluster left empty when every
    row already sits on a centre keeps its previous centre (scikit-learn moves it
    onto the largest cluster's).

    **Sparse input.** ``X`` may be any scipy.sparse matrix or array (converted to
    CSR, as scikit-learn does) in :meth:`fit`, :meth:`predict`, :meth:`transform`,
    :meth:`score` and the ``fit_*`` methods, with the same result as its dense
    equivalent. The E-step needs dense rows, so the device receives the centred
    rows densified; the host densifies them a block of rows at a time. A callable
    ``init`` receives the sparse ``X`` uncentred, as in scikit-learn.

    Examples
    --------
    >>> import numpy as np
    >>> from jaxem import KMeans
    >>> X = np.array([[1, 2], [1, 4], [1, 0], [10, 2], [10, 4], [10, 0]])
    >>> km = KMeans(n_clusters=2, random_state=0).fit(X)
    >>> print(np.sort(km.cluster_centers_, axis=0))
    [[ 1.  2.]
     [10.  2.]]
    >>> km.predict([[0, 0], [12, 3]]) == km.predict([[1, 2], [10, 2]])
    array([ True,  True])
    >>> km.inertia_
    16.0
    """

    _parameter_constraints: dict = {
        "n_clusters": [Interval(Integral, 1, None, closed="left")],
        "init": [StrOptions({"k-means++", "random"}), callable, "array-like"],
        "n_init": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "random_state": ["random_state"],
        "copy_x": ["boolean"],
        "algorithm": [StrOptions({"lloyd", "elkan"})],
        "mesh": MESH_CONSTRAINT,
    }

    def __init__(
        self,
        n_clusters=8,
        *,
        init="k-means++",
        n_init="auto",
        max_iter=300,
        tol=1e-4,
        verbose=0,
        random_state=None,
        copy_x=True,
        algorithm="lloyd",
        mesh=None,
    ):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.verbose = verbose
        self.random_state = random_state
        self.copy_x = copy_x
        self.algorithm = algorithm
        self.mesh = mesh

    # -- fitting ---------------------------------------------------------------------------
    @in_input_precision
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, sample_weight=None):
        """Compute k-means clustering with ``n_init`` batched restarts.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Training rows.
        y : Ignored
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weight of every row (None: all ones). Used by the
            'k-means++' and 'random' seeding, not by an array or callable ``init``.

        Returns
        -------
        self : KMeans
            The fitted estimator.

        Warns
        -----
        ConvergenceWarning
            If fewer distinct clusters than ``n_clusters`` were found.
        RuntimeWarning
            If ``init`` is an array and ``n_init`` is not 1 (only one init runs), or
            ``algorithm='elkan'`` with one cluster (Lloyd is used).
        """
        if sp.issparse(X):
            X = self._check_sparse(X, reset=True)
            dtype = _validation.compute_dtype(X.dtype)
            offset = np.asarray(X.mean(axis=0, dtype=np.float64)).ravel()
        else:
            X, dtype, offset = self._validate_fit_input(X)
        n_samples, n_features = X.shape
        n_clusters = int(self.n_clusters)
        if n_samples < n_clusters:
            raise ValueError(f"n_samples={n_samples} should be >= n_clusters={n_clusters}.")
        sample_weight = _check_sample_weight(
            sample_weight, X, dtype=X.dtype, ensure_non_negative=True
        )
        n_init = self._resolve_n_init()
        self._n_init = n_init  # scikit-learn keeps the resolved count here too
        if self.algorithm == "elkan" and n_clusters == 1:
            warnings.warn(
                "algorithm='elkan' doesn't make sense for a single cluster. Using 'lloyd' instead.",
                RuntimeWarning,
                stacklevel=3,
            )
        random_state = check_random_state(self.random_state)

        # Centre the data (scikit-learn does too): the distances expanded as
        # |x|² - 2 x·c + |c|² stay accurate in float32.
        if sp.issparse(X):
            x, variances = _dense_rows(X, lambda rows: rows - offset.astype(X.dtype), dtype)
            init_data = X  # a callable init sees the sparse rows, as in scikit-learn
        else:
            centred = X - offset.astype(X.dtype)
            x = np.asarray(centred, dtype)
            variances = np.var(centred, axis=0)
            init_data = centred
        weights = np.asarray(sample_weight, dtype)
        # scikit-learn's _tolerance: tol times the mean per-feature variance of X.
        tol = 0.0 if self.tol == 0 else float(self.tol) * float(variances.mean())

        model = self._model_for(n_clusters, n_samples)
        init_params = self._initial_centers(init_data, offset, n_init, random_state, dtype)
        if init_params is not None:
            init_params = KMeansParams(np.asarray(model.pad(init_params).centers))
        key = _validation.random_key(random_state)
        result = self._engine_fit(
            model,
            x,
            key=key,
            n_restarts=n_init,
            max_iter=int(self.max_iter),
            tol=tol,
            weights=weights,
            init_params=init_params,
        )

        # Final assignment with every restart's final centres; keep the lowest inertia.
        centers = np.asarray(result.restarts.params.centers)
        best = 0
        if n_init > 1:
            padded = model.pad(KMeansParams(centers))
            distances = self._evaluate_restarts(model, padded, x)
            inertias = distances @ weights.astype(np.float64)
            usable = (self.restarts_.status != Status.NON_FINITE) & np.isfinite(inertias)
            best = int(np.argmin(np.where(usable, inertias, np.inf)))
        if self.verbose:
            self._print_trace(result, float(np.sum(sample_weight)), tol)
        del x  # sparse input is densified again below, one dense copy at a time

        self.cluster_centers_ = (np.asarray(centers[best], np.float64) + offset).astype(dtype)
        self._fit_offset = offset
        # labels_ and inertia_ exactly as predict() and score() compute them.
        labels, squared = self._evaluate(X, ("predict", "nearest_squared_distance"))
        distinct = len(np.unique(labels))
        if distinct < n_clusters:
            warnings.warn(
                f"Number of distinct clusters ({distinct}) found smaller than "
                f"n_clusters ({n_clusters}). Possibly due to duplicate points in X.",
                ConvergenceWarning,
                stacklevel=3,
            )

        self._n_features_out = n_clusters
        self.labels_ = labels
        self.inertia_ = float(np.dot(squared.astype(np.float64), sample_weight))
        self.n_iter_ = int(self.restarts_.n_iter[best])
        return self

    def _initial_centers(self, data, offset, n_init, random_state, dtype):
        """User-given initial centres in centred coordinates, or None for the model's.

        ``data`` is what a callable ``init`` receives: the centred rows, or sparse
        rows uncentred (scikit-learn centres only dense input).
        """
        name = self._init_name()
        if name == "array":
            centers = check_array(self.init, dtype=data.dtype, copy=True, order="C")
            self._check_center_shape(data, centers)
            return KMeansParams(np.asarray(centers - offset, dtype))
        if name == "callable":
            stacked = []
            for _ in range(n_init):
                centers = self.init(data, int(self.n_clusters), random_state=random_state)
                centers = check_array(centers, dtype=data.dtype, copy=False, order="C")
                self._check_center_shape(data, centers)
                stacked.append(centers - offset if sp.issparse(data) else centers)
            return KMeansParams(np.asarray(np.stack(stacked), dtype))
        return None

    def _print_trace(self, result, total_weight, tol):
        """scikit-learn's verbose lines, reconstructed from the batched run's trace.

        The trace holds every iteration's inertia but not the centre shift, so a
        convergence is "strict" when ``tol`` is 0 (the only way to stop then) and
        "center shift at most tol" otherwise.
        """
        trace = np.asarray(result.restarts.trace)
        n_iters = np.asarray(result.restarts.n_iter)
        statuses = np.asarray(result.restarts.status)
        for restart in range(trace.shape[0]):
            print("Initialization complete")
            for iteration in range(int(n_iters[restart])):
                inertia = -float(trace[restart, iteration]) * total_weight
                print(f"Iteration {iteration}, inertia {inertia}.")
            if statuses[restart] == Status.CONVERGED:
                at = f"Converged at iteration {int(n_iters[restart]) - 1}"
                if tol == 0:
                    print(f"{at}: strict convergence.")
                else:
                    print(f"{at}: center shift at most tol, within tolerance {tol}.")

    # -- the base's hooks --------------------------------------------------------------------
    def _centre(self, X):
        """Always the column means, as scikit-learn's KMeans centres its data."""
        return X.mean(axis=0, dtype=np.float64)

    def _evaluate_restarts(self, model, params, x):
        """``(R, n)`` squared distance of every row to its nearest centre, per restart."""
        values = engine.evaluate(model, params, x, "nearest_squared_distance", restarts=True)
        return np.asarray(values, np.float64)


def _dense_rows(X, centre, dtype):
    """``centre`` of every block of rows of sparse ``X``, as one dense ``dtype`` array.

    Densifying ``_SPARSE_BLOCK_ELEMENTS`` at a time bounds the memory beyond the dense
    result (which the device needs) by one block.

    Returns
    -------
    x : ndarray (n_samples, n_features) of ``dtype``
    variances : ndarray (n_features,)
        Per-feature variance of the centred rows (float64), for scikit-learn's ``tol``.
    """
    n_samples, n_features = X.shape
    x = np.empty((n_samples, n_features), dtype)
    total = np.zeros(n_features)
    squares = np.zeros(n_features)
    step = max(1, _SPARSE_BLOCK_ELEMENTS // max(n_features, 1))
    for start in range(0, n_samples, step):
        rows = centre(X[start : start + step].toarray())
        x[start : start + step] = rows
        total += rows.sum(axis=0, dtype=np.float64)
        squares += np.square(rows, dtype=np.float64).sum(axis=0)
    mean = total / n_samples
    return x, squares / n_samples - mean * mean
