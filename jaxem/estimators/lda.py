"""``LatentDirichletAllocation``: scikit-learn's topic model by variational EM.

A drop-in for :class:`sklearn.decomposition.LatentDirichletAllocation`: the same
parameters (plus ``n_init``), attributes, methods and messages, on
:func:`jaxem.lda` (:mod:`jaxem.models.lda`). Each EM pass is one engine call: the
E-step of every restart over all documents (batched, chunked, compiled once per
shape) by :func:`jaxem.engine.statistics`, or for online learning each mini-batch
by :func:`jaxem.engine.online_step` (``ρ_t = (learning_offset + t)^-learning_decay``).

Random numbers come from ``random_state_`` exactly as scikit-learn draws them
(the initial ``components_`` from Gamma(100, 1/100), and in every training E-step
each document's starting ``γ`` likewise), so a float64 fit equals scikit-learn's
with ``n_jobs=1`` up to rounding. ``n_jobs`` is accepted and has no effect: jaxem's
E-step is one vectorised program (scikit-learn with ``n_jobs > 1`` draws the
documents' starting ``γ`` per slice of documents; jaxem draws them as with
``n_jobs=1``). ``mesh`` splits the documents of every E-step over devices instead
(on a CPU, several host devices:
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` set before JAX starts).
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin, _fit_context
from sklearn.utils import check_random_state, gen_batches
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, check_non_negative, validate_data

from jaxem import engine
from jaxem.estimators import _validation
from jaxem.estimators._base import MESH_CONSTRAINT, EMEstimator
from jaxem.models.lda import (
    Documents,
    LDAParams,
    LDAStats,
    documents_from_counts,
    lda,
)

__all__ = ["LatentDirichletAllocation"]

#: scikit-learn's Gamma(shape, scale) draws of the initial topics and document topics.
_INIT_SHAPE, _INIT_SCALE = 100.0, 1.0 / 100.0


class LatentDirichletAllocation(ClassNamePrefixFeaturesOutMixin, TransformerMixin, EMEstimator):
    """Latent Dirichlet allocation with online and batch variational Bayes; a drop-in
    for scikit-learn's, with ``n_init`` restarts run as one batch.

    Parameters
    ----------
    n_components : int, default=10
        Number of topics.
    doc_topic_prior, topic_word_prior : float, default=None
        ``α`` and ``η``; None means ``1 / n_components``.
    learning_method : {"batch", "online"}, default="batch"
    learning_decay, learning_offset : float, default=0.7 and 10.0
        Online step size ``(learning_offset + t)^-learning_decay``.
    max_iter : int, default=10
        Passes over the data.
    batch_size : int, default=128
        Documents per online step.
    evaluate_every : int, default=-1
        Compute the training perplexity every this many passes (0 or less: never);
        stop when it changes by less than ``perp_tol``.
    total_samples : float, default=1e6
        Corpus size assumed by :meth:`partial_fit`.
    perp_tol, mean_change_tol, max_doc_update_iter : as scikit-learn's.
    n_jobs : int, default=None
        Accepted for compatibility; no effect (the E-step is one vectorised program;
        see ``mesh``).
    verbose : int, default=0
    random_state : int, RandomState instance or None, default=None
    n_init : int, default=1
        Restarts, each from its own initial topics, run together; the one with the
        lowest training perplexity is kept. Restart 0 is scikit-learn's fit.
    restart_passes : int or None, default=None
        jaxem extension: short-run restarts (the "emEM" strategy of Biernacki, Celeux
        and Govaert 2003). All ``n_init`` restarts run this many passes together; then
        only the one with the highest variational bound continues, alone, for the
        rest of ``max_iter``. The bound compared is the one the last shared pass
        measures on the training documents anyway (its E-step, at the topics that
        pass started from; summed over the mini-batches in online learning), so the
        choice costs no extra pass; 2 or more makes it informed (after one pass it
        compares the random initial topics). None: every restart runs every pass.
        A fit of ``P`` passes then costs about ``restart_passes`` passes of
        ``n_init`` restarts plus ``P - restart_passes`` passes of one.
    mesh : None, int or jax.sharding.Mesh, default=None
        jaxem extension: devices to split the documents of every training E-step
        (batch or online mini-batch) over (see :func:`jaxem.fit`; rows only), each
        device sweeping its share and the statistics summed across them; the fit is
        the one-device fit up to rounding. On a CPU JAX sees one device unless
        ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` is set before it
        starts. ``transform``, ``score`` and ``perplexity`` run on one device.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        Topic-word variational parameters ``λ``.
    exp_dirichlet_component_ : ndarray of shape (n_components, n_features)
        ``exp(E[log β])``.
    n_batch_iter_, n_iter_ : int
    bound_ : float
        Final training perplexity.
    doc_topic_prior_, topic_word_prior_ : float
    best_restart_ : int
        The restart kept (0 with ``n_init=1``).
    restarts_perplexity_ : ndarray of shape (n_init,)
        Each restart's final training perplexity; NaN for the restarts dropped
        after ``restart_passes``.
    random_state_ : RandomState
    n_features_in_ : int
    feature_names_in_ : ndarray of str, when fitted on a DataFrame with string column names

    Notes
    -----
    Counts may be any non-negative numbers (scikit-learn accepts non-negative floats;
    so does jaxem); negative values raise ``ValueError``. Documents with no words are
    allowed and change nothing. Sparse input is read as CSR and never densified:
    documents become padded (word ids, counts) rows of width the largest number of
    distinct words in a document (rounded up to one of four steps per power of
    two: 8, 10, 12, 14, 16, 20, ...), sorted by length so that chunks of similar
    documents are swept at a narrower width (results come back in ``X``'s order;
    sums over documents change only by rounding).

    Examples
    --------
    >>> import numpy as np
    >>> from jaxem import LatentDirichletAllocation
    >>> X = np.kron(np.eye(3, dtype=int), np.full((4, 3), 5))  # 12 documents, 9 words
    >>> lda = LatentDirichletAllocation(n_components=3, random_state=0).fit(X)
    >>> lda.components_.shape, lda.transform(X).shape
    ((3, 9), (12, 3))
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 0, None, closed="neither")],
        "doc_topic_prior": [None, Interval(Real, 0, 1, closed="both")],
        "topic_word_prior": [None, Interval(Real, 0, 1, closed="both")],
        "learning_method": [StrOptions({"batch", "online"})],
        "learning_decay": [Interval(Real, 0, 1, closed="both")],
        "learning_offset": [Interval(Real, 1.0, None, closed="left")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 0, None, closed="neither")],
        "evaluate_every": [Interval(Integral, None, None, closed="neither")],
        "total_samples": [Interval(Real, 0, None, closed="neither")],
        "perp_tol": [Interval(Real, 0, None, closed="left")],
        "mean_change_tol": [Interval(Real, 0, None, closed="left")],
        "max_doc_update_iter": [Interval(Integral, 0, None, closed="left")],
        "n_jobs": [None, Integral],
        "verbose": ["verbose"],
        "random_state": ["random_state"],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "restart_passes": [None, Interval(Integral, 1, None, closed="left")],
        "mesh": MESH_CONSTRAINT,
    }
    _precision_attribute = "components_"

    def __init__(
        self,
        n_components=10,
        *,
        doc_topic_prior=None,
        topic_word_prior=None,
        learning_method="batch",
        learning_decay=0.7,
        learning_offset=10.0,
        max_iter=10,
        batch_size=128,
        evaluate_every=-1,
        total_samples=1e6,
        perp_tol=1e-1,
        mean_change_tol=1e-3,
        max_doc_update_iter=100,
        n_jobs=None,
        verbose=0,
        random_state=None,
        n_init=1,
        restart_passes=None,
        mesh=None,
    ):
        self.n_components = n_components
        self.doc_topic_prior = doc_topic_prior
        self.topic_word_prior = topic_word_prior
        self.learning_method = learning_method
        self.learning_decay = learning_decay
        self.learning_offset = learning_offset
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.evaluate_every = evaluate_every
        self.total_samples = total_samples
        self.perp_tol = perp_tol
        self.mean_change_tol = mean_change_tol
        self.max_doc_update_iter = max_doc_update_iter
        self.n_jobs = n_jobs
        self.verbose = verbose
        self.random_state = random_state
        self.n_init = n_init
        self.restart_passes = restart_passes
        self.mesh = mesh

    # -- the model and its inputs -----------------------------------------------------------
    def _build_model(self, n_components, max_components):
        del max_components
        return lda(
            n_components,
            self.n_features_in_,
            doc_topic_prior=self.doc_topic_prior_,
            topic_word_prior=self.topic_word_prior_,
            mean_change_tol=float(self.mean_change_tol),
            max_doc_update_iter=int(self.max_doc_update_iter),
        )

    def _model(self):
        return self._build_model(self.components_.shape[0], None)

    def _n_components_fitted(self) -> int:
        return int(np.asarray(self.components_).shape[0])

    def _check_non_neg_array(self, X, reset_n_features, whom):
        """scikit-learn's validation: dense or CSR, float64/float32 (the fitted dtype
        after fitting), no negative count, at least one feature."""
        dtype = [np.float64, np.float32] if reset_n_features else self.components_.dtype
        X = validate_data(self, X, reset=reset_n_features, accept_sparse="csr", dtype=dtype)
        check_non_negative(X, whom)
        return X

    def _documents(self, X, dtype, random_init, padded=None):
        """Padded bags of words (sorted by length, see :class:`_Corpus`); with
        ``random_init`` each document's starting ``γ`` drawn from ``random_state_`` as
        scikit-learn draws it. ``padded``: ``X``'s :class:`_Corpus` already built (a
        fit pads each batch once, not once per pass)."""
        start = None
        if random_init:
            size = (X.shape[0], self.components_.shape[0])
            start = self.random_state_.gamma(_INIT_SHAPE, _INIT_SCALE, size).astype(dtype)
        corpus = _Corpus.of(X, dtype) if padded is None else padded
        return corpus.documents_from(start)

    def _hyper(self, dtype):
        return self._model().hyper(dtype)

    # -- fitting ----------------------------------------------------------------------------
    def _init_latent_vars(self, n_features, dtype):
        self.random_state_ = check_random_state(self.random_state)
        self.n_batch_iter_ = 1
        self.n_iter_ = 0
        default = 1.0 / self.n_components
        self.doc_topic_prior_ = default if self.doc_topic_prior is None else self.doc_topic_prior
        self.topic_word_prior_ = default if self.topic_word_prior is None else self.topic_word_prior
        size = (self.n_components, n_features)
        draws = [self.random_state_.gamma(_INIT_SHAPE, _INIT_SCALE, size).astype(dtype)]
        if self.n_init > 1:
            # Further restarts draw from a generator seeded from a copy of the state,
            # so restart 0 and the documents' draws stay scikit-learn's.
            copy = np.random.RandomState()
            copy.set_state(self.random_state_.get_state())
            extra = np.random.RandomState(copy.randint(np.iinfo(np.int32).max))
            draws += [
                extra.gamma(_INIT_SHAPE, _INIT_SCALE, size).astype(dtype)
                for _ in range(int(self.n_init) - 1)
            ]
        self.components_ = draws[0]
        return LDAParams(jnp.asarray(np.stack(draws)))

    def _batch_step(self, X, params, running, dtype, padded=None, mesh=None):
        docs = self._documents(X, dtype, random_init=True, padded=padded)
        model = self._model()
        stats, documents_bound = engine.statistics(
            model,
            params,
            docs,
            hyper=self._hyper(dtype),
            restarts=True,
            mesh=mesh,
            chunk_size=_restarts_chunk_size(model, docs, len(running)),
        )
        new = LDAParams(self.topic_word_prior_ + stats.topic_word)
        self.n_batch_iter_ += 1
        return _where_running(running, new, params), documents_bound

    def _online_step(self, X, params, running, dtype, total_samples, padded=None, mesh=None):
        if padded is None:
            padded = _Corpus.of(X, dtype, _row_shards(mesh))
        docs = self._documents(X, dtype, random_init=True, padded=padded)
        hyper = self._hyper(dtype)
        # λ = η + s: the running statistics s are the topics less the prior.
        state = engine.OnlineState(
            params, LDAStats(params.topic_word - hyper.topic_word_prior), self.n_batch_iter_ - 1
        )
        state, mean_bound = engine.online_step(
            self._model(),
            state,
            docs,
            init_params=None,
            step_decay=float(self.learning_decay),
            step_offset=float(self.learning_offset) + 1.0,
            rows_represented=float(total_samples),
            hyper=hyper,
            chunk_size=None if mesh is None else _SHARDED_ONLINE_CHUNK,
            mesh=mesh,
        )
        self.n_batch_iter_ += 1
        return _where_running(running, state.params, params), mean_bound * X.shape[0]

    def _set_components(self, params, restart):
        # Indexed on the host: indexing the device array compiles a program per shape.
        self.components_ = np.asarray(params.topic_word)[restart]
        self.exp_dirichlet_component_ = engine.parameter_outputs(
            self._model(), LDAParams(jnp.asarray(self.components_[None])), "exp_topic_word"
        )[0]

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Learn the topics of ``X`` (documents x words counts, dense or CSR) by
        variational Bayes: batch, or online mini-batches when
        ``learning_method="online"``.

        Returns
        -------
        self
        """
        X = self._check_non_neg_array(X, reset_n_features=True, whom=f"{_NAME}.fit")
        with _validation.precision(X.dtype):
            return self._fit(X)

    def _fit(self, X):
        n_samples, n_features = X.shape
        dtype = _validation.compute_dtype(X.dtype)
        mesh = engine.resolve_mesh(self.mesh)
        params = self._init_latent_vars(n_features, X.dtype)
        n_restarts = int(self.n_init)
        running = np.ones(n_restarts, bool)
        n_iter = np.zeros(n_restarts, int)
        last = np.full(n_restarts, np.nan)
        # Every pass sees the same documents (whole, or the same mini-batches): pad
        # them once; each pass only draws new starting γ.
        if self.learning_method == "online":
            batches = list(gen_batches(n_samples, self.batch_size))
            padded = [_Corpus.of(X[batch], dtype, _row_shards(mesh)) for batch in batches]
        else:
            padded = _Corpus.of(X, dtype, _row_shards(mesh))
        whole = None if self.learning_method == "online" else padded
        kept = np.arange(n_restarts)  # the restarts still in params, by their index
        for i in range(self.max_iter):
            started_from = params
            if self.learning_method == "online":
                documents_bound = 0.0
                for batch, docs in zip(batches, padded):
                    params, batch_bound = self._online_step(
                        X[batch], params, running, dtype, n_samples, padded=docs, mesh=mesh
                    )
                    documents_bound = documents_bound + batch_bound
            else:
                params, documents_bound = self._batch_step(
                    X, params, running, dtype, padded=padded, mesh=mesh
                )
            if len(kept) > 1 and self.restart_passes == i + 1 and i + 1 < self.max_iter:
                bound = np.asarray(documents_bound, np.float64) + self._topic_bounds(
                    started_from, dtype
                )
                best = int(np.argmax(np.where(np.isfinite(bound), bound, -np.inf)))
                if self.verbose:
                    print(
                        f"iteration: {i + 1}, restart {best} of {len(kept)} continues "
                        f"(bound {bound[best]:.4f})"
                    )
                chosen = slice(best, best + 1)
                params = LDAParams(params.topic_word[chosen])
                kept, running, n_iter, last = (a[chosen] for a in (kept, running, n_iter, last))
            if self.evaluate_every > 0 and (i + 1) % self.evaluate_every == 0:
                if whole is None:
                    whole = _Corpus.of(X, dtype)
                perplexity = self._perplexities(X, params, dtype, whole)
                if self.verbose:
                    print(
                        f"iteration: {i + 1} of max_iter: {self.max_iter}, "
                        f"perplexity: {np.min(perplexity):.4f}"
                    )
                # scikit-learn: ``if last_bound and abs(last_bound - bound) < perp_tol``.
                stop = (last != 0) & ~np.isnan(last) & (np.abs(last - perplexity) < self.perp_tol)
                last = np.where(running, perplexity, last)
                running &= ~stop
            elif self.verbose:
                print(f"iteration: {i + 1} of max_iter: {self.max_iter}")
            n_iter += running
            if not running.any():
                break
        bound = self._train_bounds(X, params, dtype, whole)
        perplexity = self._perplexity_of(bound, X, sub_sampling=False)
        # Chosen by the bound: the perplexity of a corpus without words is not finite.
        usable = np.isfinite(bound) & np.all(
            np.isfinite(np.asarray(params.topic_word)), axis=(1, 2)
        )
        if not usable.any():
            raise ValueError(
                "Every restart of LatentDirichletAllocation went non-finite; check the "
                "counts (finite, non-negative), or fit in float64."
            )
        best = int(np.argmax(np.where(usable, bound, -np.inf)))
        self._set_components(params, best)
        self.components_ = self.components_.astype(X.dtype, copy=False)
        self.exp_dirichlet_component_ = self.exp_dirichlet_component_.astype(X.dtype)
        self.n_iter_ = int(n_iter[best])
        self.bound_ = float(perplexity[best])
        self.best_restart_ = int(kept[best])
        self.restarts_perplexity_ = np.full(n_restarts, np.nan)
        self.restarts_perplexity_[kept] = perplexity
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None):
        """One online pass over ``X`` in mini-batches of ``batch_size``, the corpus
        assumed to hold ``total_samples`` documents (the first call initialises).

        Returns
        -------
        self
        """
        first_time = not hasattr(self, "components_")
        X = self._check_non_neg_array(X, reset_n_features=first_time, whom=f"{_NAME}.partial_fit")
        mesh = engine.resolve_mesh(self.mesh)
        n_samples, n_features = X.shape
        with _validation.precision(X.dtype):
            dtype = _validation.compute_dtype(X.dtype)
            if first_time:
                params = self._init_latent_vars(n_features, X.dtype)
                params = LDAParams(params.topic_word[:1])  # one model is updated online
            if n_features != self.components_.shape[1]:
                raise ValueError(
                    f"The provided data has {n_features} dimensions while the model "
                    f"was trained with feature size {self.components_.shape[1]}."
                )
            if not first_time:
                params = LDAParams(jnp.asarray(self.components_[None], dtype))
            running = np.ones(1, bool)
            for batch in gen_batches(n_samples, self.batch_size):
                params, _ = self._online_step(
                    X[batch], params, running, dtype, self.total_samples, mesh=mesh
                )
            self._set_components(params, 0)
            self.components_ = self.components_.astype(X.dtype, copy=False)
            self.exp_dirichlet_component_ = self.exp_dirichlet_component_.astype(X.dtype)
        return self

    # -- evaluation -------------------------------------------------------------------------
    def _document_outputs(
        self, X, output, params=None, dtype=None, start=None, hyper=None, padded=None
    ):
        """Per-document ``output`` (``"doc_topic"`` or ``"log_prob"``) of every restart
        in ``params`` (default: the fitted topics, one restart); ``padded``: ``X``'s
        :class:`_Corpus` already built."""
        fitted = params is None
        if fitted:
            dtype = _validation.compute_dtype(self.components_.dtype)
            params = LDAParams(jnp.asarray(self.components_[None], dtype))
        corpus = _Corpus.of(X, dtype) if padded is None else padded
        docs = corpus.documents_from(start)
        hyper = self._hyper(dtype) if hyper is None else hyper
        model = self._model()
        chunk_size = _restarts_chunk_size(model, docs, len(params.topic_word))
        values = engine.evaluate(
            model, params, docs, output, restarts=True, hyper=hyper, chunk_size=chunk_size
        )
        values = corpus.in_rows_order(np.asarray(values))
        return values[0] if fitted else values

    def _train_bounds(self, X, params, dtype, padded=None):
        """Each restart's variational bound of ``X`` from the E-step started at ones
        (scikit-learn's ``_approx_bound`` after ``_e_step(random_init=False)``)."""
        documents = self._document_outputs(X, "log_prob", params, dtype, padded=padded)
        return self._bounds(documents, params, dtype, X.shape[0], sub_sampling=False)

    def _perplexities(self, X, params, dtype, padded=None):
        bound = self._train_bounds(X, params, dtype, padded)
        return self._perplexity_of(bound, X, sub_sampling=False)

    def _bounds(self, document_terms, params, dtype, n_samples, sub_sampling):
        score = np.sum(np.asarray(document_terms, np.float64), axis=-1)
        if sub_sampling:
            score = score * (float(self.total_samples) / n_samples)
        return score + self._topic_bounds(params, dtype)

    def _topic_bounds(self, params, dtype):
        """Each restart's topics' part of the bound, ``(R,)`` float64."""
        bounds = engine.parameter_outputs(
            self._model(), params, "topic_bound", hyper=self._hyper(dtype)
        )
        return np.asarray(bounds, np.float64)

    def _perplexity_of(self, bound, X, sub_sampling):
        word_count = float(X.sum())
        if sub_sampling:
            word_count *= float(self.total_samples) / X.shape[0]
        return np.exp(-1.0 * bound / word_count)

    def _unnormalized_transform(self, X):
        with _validation.precision(self.components_.dtype):
            gamma = self._document_outputs(X, "doc_topic")
        return np.asarray(gamma).astype(self.components_.dtype)

    def transform(self, X, *, normalize=True):
        """Each document's topic distribution.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        normalize : bool, default=True
            Normalise each row to sum to 1.

        Returns
        -------
        ndarray of shape (n_samples, n_components)
        """
        check_is_fitted(self)
        X = self._check_non_neg_array(X, reset_n_features=False, whom=f"{_NAME}.transform")
        doc_topic_distr = self._unnormalized_transform(X)
        if normalize:
            doc_topic_distr /= doc_topic_distr.sum(axis=1)[:, np.newaxis]
        return doc_topic_distr

    def fit_transform(self, X, y=None, *, normalize=True):
        """``fit(X).transform(X, normalize=normalize)``."""
        return self.fit(X, y).transform(X, normalize=normalize)

    def _approx_bound(self, X, doc_topic_distr, sub_sampling):
        """The variational bound of ``X`` at the documents' ``γ`` ``doc_topic_distr``."""
        dtype = _validation.compute_dtype(self.components_.dtype)
        params = LDAParams(jnp.asarray(self.components_[None], dtype))
        # No sweep: the bound at the given γ.
        hyper = self._hyper(dtype)._replace(max_doc_update_iter=jnp.asarray(0, jnp.int32))
        start = np.asarray(doc_topic_distr, dtype)
        terms = self._document_outputs(X, "log_prob", params, dtype, start, hyper)
        return float(self._bounds(terms, params, dtype, X.shape[0], sub_sampling)[0])

    def score(self, X, y=None):
        """The approximate log-likelihood (variational bound) of ``X``.

        Returns
        -------
        float
        """
        check_is_fitted(self)
        X = self._check_non_neg_array(X, reset_n_features=False, whom=f"{_NAME}.score")
        with _validation.precision(self.components_.dtype):
            return self._approx_bound(X, self._unnormalized_transform(X), sub_sampling=False)

    def _perplexity_precomp_distr(self, X, doc_topic_distr=None, sub_sampling=False):
        """Perplexity of ``X`` at the given (or fitted) document topics."""
        if doc_topic_distr is None:
            doc_topic_distr = self._unnormalized_transform(X)
        else:
            n_samples, n_components = doc_topic_distr.shape
            if n_samples != X.shape[0]:
                raise ValueError("Number of samples in X and doc_topic_distr do not match.")
            if n_components != self.n_components:
                raise ValueError("Number of topics does not match.")
        with _validation.precision(self.components_.dtype):
            bound = self._approx_bound(X, doc_topic_distr, sub_sampling)
        return float(self._perplexity_of(bound, X, sub_sampling))

    def perplexity(self, X, sub_sampling=False):
        """``exp(-bound / number of words)`` of ``X``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        sub_sampling : bool, default=False
            Scale the documents' part as a sample of ``total_samples`` documents.

        Returns
        -------
        float
        """
        check_is_fitted(self)
        X = self._check_non_neg_array(X, reset_n_features=False, whom=f"{_NAME}.perplexity")
        return self._perplexity_precomp_distr(X, sub_sampling=sub_sampling)

    @property
    def _n_features_out(self):
        return self.components_.shape[0]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True
        tags.input_tags.sparse = True
        tags.transformer_tags.preserves_dtype = ["float32", "float64"]
        return tags


_NAME = LatentDirichletAllocation.__name__


class _Corpus(NamedTuple):
    """A count matrix's documents as padded bags of words, sorted by their number of
    distinct words, so that chunks of similar documents are swept at a narrower width
    than the corpus's widest (see :func:`jaxem.models.lda.width_classes`). Sums over
    documents (the statistics, the bound) do not depend on the order but for
    rounding; per-document outputs are put back in ``X``'s row order.
    """

    documents: Documents  # without starting γ
    order: np.ndarray  # documents' row i is X's row order[i]

    @classmethod
    def of(cls, X, dtype, n_shards: int = 1) -> _Corpus:
        """``X``'s documents sorted by length; for ``n_shards`` devices, each taking
        a contiguous block of rows, dealt in turn so that every block holds short and
        long ones alike (each block sorted)."""
        docs = documents_from_counts(X, dtype)
        order = np.argsort(np.count_nonzero(docs.counts, axis=1), kind="stable")
        if n_shards > 1:
            order = np.concatenate([order[shard::n_shards] for shard in range(n_shards)])
        return cls(Documents(docs.word_ids[order], docs.counts[order]), order)

    def documents_from(self, start) -> Documents:
        """The documents with their starting ``γ`` (given in ``X``'s row order)."""
        start = None if start is None else np.asarray(start)[self.order]
        return self.documents._replace(doc_topic_start=start)

    def in_rows_order(self, values):
        """Per-document ``values`` ``(restarts, n, ...)`` back in ``X``'s row order."""
        restored = np.empty_like(values)
        restored[:, self.order] = values
        return restored


#: Documents per chunk of an online step split over devices. Measured on 2 host
#: devices of a 2-core CPU (8 steps, K = 50, V = 5,000, float32): steps of 1,024,
#: 2,048 and 4,096 documents took 0.39, 0.63 and 1.17 s in chunks of 64 against
#: 0.63, 0.91 and 1.39 s in the default 256 (one device: the same either way; batch
#: passes over 16,384 documents: the same either way). Why was not found.
_SHARDED_ONLINE_CHUNK = 64


#: Restarts that share one restart's chunk of documents in a batch pass or an
#: evaluation: the model sweeps them in turn, each in a working set of that size
#: (``_sweep_restart_groups``), so their per-chunk work on ``(V, K)`` statistics is
#: paid once per chunk, not once per ``1/R`` of it. Measured (one pass, 20,000
#: documents, K = 50, V = 5,000, 8 restarts, 2-core CPU): float32 13.8 s in chunks of
#: 256 documents against 16.0 s in the engine's default 32 (one restart 1.53 s);
#: float64 28.6 s in chunks of 128 against 37.6 s in 16 (one restart 3.28 s). Chunks
#: of 1,024 were slower again (16.2 s). Memory per chunk grows with up to this many
#: restarts. Online steps keep the engine's chunks: shared ones were no faster there
#: (8 restarts, 2 passes of 1,024-document steps: 31.7 against 29.5 s).
_RESTARTS_PER_CHUNK = 8


def _restarts_chunk_size(model, docs: Documents, n_restarts: int) -> int:
    """Documents per chunk for ``n_restarts``: one restart's chunk, shared by up to
    :data:`_RESTARTS_PER_CHUNK` of them."""
    n_shared = -(-int(n_restarts) // _RESTARTS_PER_CHUNK)
    return engine.default_chunk_size(docs.counts.shape[0], n_shared, model.row_width(docs))


def _row_shards(mesh) -> int:
    """How many blocks of rows ``mesh`` splits the documents into."""
    return 1 if mesh is None else int(dict(mesh.shape).get(engine.ROWS, 1))


def _where_running(running, new, old):
    keep = jnp.asarray(running)[:, None, None]
    return LDAParams(jnp.where(keep, new.topic_word, old.topic_word))
