"""Latent Dirichlet allocation by variational EM (Blei, Ng and Jordan 2003).

Topics ``β_k ~ Dir(η)`` over ``V`` words, per document ``θ_d ~ Dir(α)`` over ``K``
topics, each token's topic from ``θ_d`` and its word from that topic. The
variational posterior is ``q(β_k) = Dir(λ_k)`` (the parameters: scikit-learn's
``components_``, ``(K, V)``) and ``q(θ_d) = Dir(γ_d)`` per document.

The E-step is itself an optimisation: for fixed ``λ`` each document's ``γ_d``
runs the fixed point (scikit-learn's ``_update_doc_distribution``)::

    φ_dw ∝ exp(E[log θ_d]) ∘ exp(E[log β_·w])
    γ_d  = α + Σ_w n_dw φ_dw

to its own tolerance (mean absolute change of ``γ_d`` below ``mean_change_tol``,
at most ``max_doc_update_iter`` sweeps), batched over the documents of a chunk in
``lax.while_loop`` loops; a document that has converged is frozen by a mask while
the others go on, and once at most a quarter of a chunk's documents are still
active they move to a working set a quarter the size. A chunk is first swept at
the narrowest of three widths that holds its words (:func:`width_classes`): the
estimator sorts documents by length, so most chunks need far fewer slots than the
corpus's widest document. Under batched restarts every (restart, document) pair
is a row of the same sweeps (a ``custom_vmap`` rule), so the working sets compact
across restarts; when a chunk holds more rows than one set of sweeps should, the
restarts are swept in turn, as many at a time as fill one set. The statistics
are the expected word-topic counts ``Σ_d n_dw φ_dwk`` ``(K, V)``, sums over
documents, so chunking, restarts, padding (weight 0) and online EM apply
unchanged. The M-step is
``λ = η + statistics`` (batch); online VB (Hoffman, Blei and Bach 2010) mixes
statistics with :func:`jaxem.engine.online_step`.

The log-likelihood the E-step returns is the document part of the variational
bound (scikit-learn's ``_approx_bound`` without the topic term, which does not
depend on the documents; :func:`topic_bound` gives it).

Documents are compact: :class:`Documents` holds per document the ids of its words
and their counts, padded to a common width ``L`` (see :func:`documents_from_counts`,
which builds them from dense arrays or scipy.sparse CSR without densifying), so a
sweep gathers ``exp(E[log β])[:, ids]``, ``(K, L)`` per document, never ``(K, V)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln

from jaxem.contract import Chunks, Model

__all__ = [
    "Documents",
    "LDA",
    "LDAParams",
    "LDAStats",
    "LDAHyper",
    "documents_from_counts",
    "document_width",
    "width_classes",
    "dirichlet_expectation",
    "topic_bound",
    "lda",
]


class Documents(NamedTuple):
    """Documents as padded bags of words (one row per document).

    ``word_ids`` ``(n, L)`` int32 and ``counts`` ``(n, L)`` floating: document ``d``
    holds ``counts[d, j]`` tokens of word ``word_ids[d, j]``; entries with a count of 0
    are padding. ``doc_topic_start`` ``(n, K)``: the E-step's starting ``γ`` of each
    document (scikit-learn draws it from Gamma(100, 1/100) for training), or None for
    all ones (scikit-learn's start for ``transform``).
    """

    word_ids: Any
    counts: Any
    doc_topic_start: Any = None


class LDAParams(NamedTuple):
    """The topic-word variational Dirichlet parameters ``λ`` ``(K, V)``."""

    topic_word: jax.Array


class LDAStats(NamedTuple):
    """Expected word-topic counts ``Σ_d n_dw φ_dwk`` ``(K, V)`` (weighted sums over
    documents)."""

    topic_word: jax.Array


class LDAHyper(NamedTuple):
    """Priors ``α`` (doc_topic_prior) and ``η`` (topic_word_prior), and the
    per-document fixed point's tolerance and sweep cap (all traced)."""

    doc_topic_prior: jax.Array
    topic_word_prior: jax.Array
    mean_change_tol: jax.Array
    max_doc_update_iter: jax.Array


def _digamma(x):
    """``ψ(x)`` for ``x > 0``: the recurrence ``ψ(x) = ψ(x + s) - Σ_{i<s} 1/(x + i)``
    and the asymptotic series at ``x + s``, with ``s = 10`` in float64 (2e-15 relative,
    as ``jax.scipy.special.digamma``, whose reflection and Lanczos branches XLA:CPU
    runs 7x slower: ψ of every document's ``γ`` is a large part of an E-step sweep)
    and ``s = 6`` in float32 (the series' first omitted term is then 2e-13). The
    recurrence's terms go in pairs, ``(2x + 2i + 1) / ((x + i)(x + i + 1))``: half the
    divisions (in float32 with the shorter shift, 8.2 against 12.0 µs for ψ of 256 x 50
    arguments, as accurate).

    >>> import jax.numpy as jnp
    >>> round(float(_digamma(jnp.array(1.0))), 5)  # -Euler's constant, in float32
    -0.57722
    """
    shift = 10 if x.dtype == jnp.float64 else 6
    recurrence = sum((2 * x + (2 * i + 1)) / ((x + i) * (x + i + 1)) for i in range(0, shift, 2))
    y = x + shift
    inv = 1.0 / y
    inv2 = inv * inv
    # B_2j / (2j y^2j), j = 1..7; the next is below 1e-16 at y >= 10, 2e-13 at y >= 6.
    series = inv2 * (
        1 / 12
        - inv2
        * (
            1 / 120
            - inv2
            * (1 / 252 - inv2 * (1 / 240 - inv2 * (1 / 132 - inv2 * (691 / 32760 - inv2 / 12))))
        )
    )
    return jnp.log(y) - 0.5 * inv - series - recurrence


def dirichlet_expectation(alpha):
    """``E[log x]`` under ``Dir(alpha)`` along the last axis:
    ``ψ(alpha) - ψ(Σ alpha)``.

    >>> import jax.numpy as jnp
    >>> round(float(dirichlet_expectation(jnp.array([1.0, 1.0]))[0]), 6)  # ψ(1) - ψ(2) = -1
    -1.0
    """
    return _digamma(alpha) - _digamma(jnp.sum(alpha, axis=-1, keepdims=True))


def _dirichlet_bound(prior, distribution, log_expectation, size):
    """``E_q[log p(x | prior)] - E_q[log q(x | distribution)]`` per row of Dirichlets
    (scikit-learn's ``_loglikelihood`` inside ``_approx_bound``), shape ``(n,)``."""
    return (
        jnp.sum((prior - distribution) * log_expectation, axis=-1)
        + jnp.sum(gammaln(distribution) - gammaln(prior), axis=-1)
        + gammaln(prior * size)
        - gammaln(jnp.sum(distribution, axis=-1))
    )


def topic_bound(params: LDAParams, hyper: LDAHyper):
    """The topics' part of the variational bound,
    ``E_q[log p(β | η)] - E_q[log q(β | λ)]`` (a scalar, independent of documents)."""
    lam = params.topic_word
    terms = _dirichlet_bound(hyper.topic_word_prior, lam, dirichlet_expectation(lam), lam.shape[-1])
    return jnp.sum(terms)


class _Sweep(NamedTuple):
    iteration: jax.Array
    doc_topic: jax.Array  # γ (n, K)
    exp_doc_topic: jax.Array  # exp(E[log θ]) (n, K)
    active: jax.Array  # (n,) documents still iterating


@dataclasses.dataclass(frozen=True)
class LDA(Model):
    """Latent Dirichlet allocation over ``n_words`` words with ``n_topics`` topics;
    see the module docstring. Build it with :func:`lda`."""

    n_topics: int
    n_words: int
    doc_topic_prior: float | None = dataclasses.field(default=None, compare=False)
    topic_word_prior: float | None = dataclasses.field(default=None, compare=False)
    mean_change_tol: float = dataclasses.field(default=1e-3, compare=False)
    max_doc_update_iter: int = dataclasses.field(default=100, compare=False)

    outputs: ClassVar[tuple[str, ...]] = ("log_prob", "doc_topic")
    parameter_outputs: ClassVar[tuple[str, ...]] = ("topic_bound", "exp_topic_word")

    # -- hyperparameters and sizes ---------------------------------------------------------
    def hyper(self, dtype) -> LDAHyper:
        default = 1.0 / self.n_topics
        alpha = default if self.doc_topic_prior is None else self.doc_topic_prior
        eta = default if self.topic_word_prior is None else self.topic_word_prior
        return LDAHyper(
            doc_topic_prior=np.asarray(alpha, dtype),
            topic_word_prior=np.asarray(eta, dtype),
            mean_change_tol=np.asarray(self.mean_change_tol, dtype),
            max_doc_update_iter=np.asarray(self.max_doc_update_iter, np.int32),
        )

    def row_width(self, x) -> int:
        """A document's gathered ``exp(E[log β])`` holds ``K × L`` entries, counted in
        float32's size. Chunks of about 8 MB of them (256 float32 or 128 float64
        documents of the benchmark's corpus) feed the working sets of
        :meth:`_sweeps`: 256 float64 documents swept 10-30 % slower than 128, and a
        float32 fit with chunks of 1,024 took 2.6x as long as with 256."""
        itemsize = np.dtype(x.counts.dtype).itemsize
        return self.n_topics * int(x.word_ids.shape[-1]) * max(1, itemsize // 4)

    def n_parameters(self, n_features: int) -> int:
        return self.n_topics * (int(n_features) - 1)

    # -- initialisation ---------------------------------------------------------------------
    def init(self, key, chunks: Chunks, hyper) -> LDAParams:
        """``λ ~ Gamma(100, 1/100)`` entrywise, scikit-learn's start (its draws come
        from numpy; estimators pass them as ``init_params``)."""
        del hyper
        dtype = chunks.x.counts.dtype
        shape = (self.n_topics, self.n_words)
        return LDAParams(jax.random.gamma(key, 100.0, shape, dtype) / 100.0)

    # -- the E-step -----------------------------------------------------------------------
    @staticmethod
    def _log_word_topic(params: LDAParams):
        """``E[log β]`` transposed, ``(V, K)``: computed once per E-step, outside the
        per-chunk branches of :func:`_by_width` (inside them XLA would recompute it
        for every chunk)."""
        return dirichlet_expectation(params.topic_word).T

    @staticmethod
    def _gather(word_topic, x: Documents):
        """A ``(V, K)`` table of the topics (``E[log β]`` or its exp) at each
        document's words, ``(n, K, L)`` (``(R, n, K, L)`` for ``R`` restarts'
        ``(R, V, K)``): words last, the layout in which XLA:CPU runs the sweep's two
        batched products and the bound's logsumexp 3-10x faster than in the
        gather's own ``(n, L, K)``."""
        return jnp.swapaxes(word_topic[..., x.word_ids, :], -1, -2)

    def _sweeps(self, x: Documents, log_word_topic, weights, hyper):
        """Every document's ``γ`` at the fixed point and its ``exp(E[log θ])``
        ``(n, K)`` each (see :meth:`_sweep_restarts`).

        Batched over restarts (``log_word_topic`` alone batched, as the engine batches
        an E-step), every (restart, document) pair becomes a row of one set of sweeps:
        the working sets then compact across restarts and a chunk of ``n / R``
        documents per restart (the engine's chunks shrink with ``R``) still fills
        them, where ``vmap`` would run each restart's loops in lockstep, each
        sweep as long as the slowest restart's. A chunk too large for one set (the
        estimator's, shared by up to 8 restarts) is swept in sets of restarts in
        turn (:meth:`_sweep_restart_groups`)."""

        @jax.custom_batching.custom_vmap
        def sweeps(x, log_word_topic, weights, hyper):
            doc_topic, exp_doc_topic = self._sweep_restarts(x, log_word_topic[None], weights, hyper)
            return doc_topic[0], exp_doc_topic[0]

        @sweeps.def_vmap
        def over_restarts(axis_size, in_batched, x, log_word_topic, weights, hyper):
            del axis_size
            x_batched, topics_batched, *others = in_batched
            if topics_batched and not any(jax.tree.leaves((x_batched, others))):
                return self._sweep_restart_groups(x, log_word_topic, weights, hyper), (True, True)
            in_axes = jax.tree.map(lambda batched: 0 if batched else None, tuple(in_batched))
            return jax.vmap(sweeps.fun, in_axes=in_axes)(x, log_word_topic, weights, hyper), (
                True,
                True,
            )

        return sweeps(x, log_word_topic, weights, hyper)

    def _sweep_restart_groups(self, x: Documents, log_word_topic, weights, hyper):
        """:meth:`_sweep_restarts` of ``R`` restarts in turn by groups of as many as
        fill one working set (:func:`_restarts_per_set`): a chunk of many documents
        (its per-chunk work on ``(V, K)`` statistics then paid fewer times per pass)
        is swept in sets of the size one restart's chunk has, whose loops run at the
        speed of the caches that hold them."""
        n_restarts = log_word_topic.shape[0]
        per_set = _restarts_per_set(x.counts.shape[0], self.row_width(x))
        if per_set >= n_restarts:
            return self._sweep_restarts(x, log_word_topic, weights, hyper)
        n_sets = -(-n_restarts // per_set)
        # Sets are whole: the last is filled with copies of the last restart's topics.
        filler = jnp.repeat(log_word_topic[-1:], n_sets * per_set - n_restarts, axis=0)
        grouped = jnp.concatenate([log_word_topic, filler]).reshape(
            (n_sets, per_set) + log_word_topic.shape[1:]
        )
        swept = jax.lax.map(lambda topics: self._sweep_restarts(x, topics, weights, hyper), grouped)
        shape = (n_sets * per_set,) + swept[0].shape[2:]
        return tuple(values.reshape(shape)[:n_restarts] for values in swept)

    def _sweep_restarts(self, x: Documents, log_word_topic, weights, hyper):
        """``γ`` and ``exp(E[log θ])`` ``(R, n, K)`` of every document under each of
        the ``R`` restarts' ``log_word_topic`` ``(R, V, K)``.

        Documents converge after very different numbers of sweeps (on the benchmark's
        corpus after one to four passes a median of 38 to 31, a chunk's slowest 80-100),
        and a converged document is only masked. So the ``R × n`` rows sweep at the
        narrowest width of :func:`width_classes` that holds the chunk until at most a
        quarter of them are still active; those move, at the documents' full width, to
        a working set a quarter the size, and so on (:func:`_working_sets`; static
        sizes, each its own loop)."""
        counts = x.counts
        dtype = counts.dtype
        n_restarts = log_word_topic.shape[0]
        n_docs = counts.shape[0]
        n_rows = n_restarts * n_docs
        if x.doc_topic_start is None:
            start = jnp.ones((n_docs, self.n_topics), dtype)
        else:  # padding rows arrive as zeros: any positive start will do for them
            start = x.doc_topic_start.astype(dtype)
            usable = (weights > 0) & jnp.all(start > 0, axis=-1)
            start = jnp.where(usable[:, None], start, jnp.ones((), dtype))
        # Row r * n + d is document d under restart r.
        start = jnp.tile(start, (n_restarts, 1))
        first = _Sweep(
            jnp.asarray(0, jnp.int32),
            start,
            jnp.exp(dirichlet_expectation(start)),
            jnp.tile(weights > 0, n_restarts),
        )
        compacts = _compacts(n_rows, x.counts.shape[-1], self.n_topics)
        sizes = _working_sets(n_rows) if compacts else (n_rows,)
        smaller = sizes[1:] + (0,)

        # exp(E[log β]) once per restart, gathered per set (not exp of every gathered slot).
        word_topic = jnp.exp(log_word_topic)

        def narrow_sweeps(x: Documents, word_topic, state: _Sweep):
            gathered = self._gather(word_topic, x)  # (R, n, K, L)
            gathered = gathered.reshape((n_rows,) + gathered.shape[2:])
            return self._sweep_while(
                state, gathered, jnp.tile(x.counts, (n_restarts, 1)), hyper, smaller[0]
            )

        state = _by_width(narrow_sweeps, x, compacts, word_topic, first)
        doc_topic, exp_doc_topic = state.doc_topic, state.exp_doc_topic
        rows = jnp.arange(n_rows)
        for size, next_size in zip(sizes[1:], smaller[1:]):
            # Active rows first (a stable sort keeps the rows distinct).
            pick = jnp.argsort(~state.active, stable=True)[:size]
            rows = rows[pick]
            state = _Sweep(
                state.iteration,
                state.doc_topic[pick],
                state.exp_doc_topic[pick],
                state.active[pick],
            )
            restart, doc = jnp.divmod(rows, n_docs)
            work = Documents(x.word_ids[doc], counts[doc])
            gathered = jnp.swapaxes(word_topic[restart[:, None], work.word_ids], 1, 2)
            state = self._sweep_while(state, gathered, work.counts, hyper, next_size)
            doc_topic = doc_topic.at[rows].set(state.doc_topic)
            exp_doc_topic = exp_doc_topic.at[rows].set(state.exp_doc_topic)
        shape = (n_restarts, n_docs, self.n_topics)
        return doc_topic.reshape(shape), exp_doc_topic.reshape(shape)

    @staticmethod
    def _sweep_while(state: _Sweep, gathered, counts, hyper, smaller: int) -> _Sweep:
        """Sweep ``state``'s documents until at most ``smaller`` are active (or the
        sweep cap)."""
        eps = jnp.finfo(counts.dtype).eps
        alpha = hyper.doc_topic_prior

        def cond(state: _Sweep):
            more = jnp.sum(state.active) > smaller
            return (state.iteration < hyper.max_doc_update_iter) & more

        def body(state: _Sweep):
            norm_phi = jnp.einsum("nk,nkl->nl", state.exp_doc_topic, gathered) + eps
            doc_topic = state.exp_doc_topic * jnp.einsum("nl,nkl->nk", counts / norm_phi, gathered)
            doc_topic = doc_topic + alpha
            exp_doc_topic = jnp.exp(dirichlet_expectation(doc_topic))
            change = jnp.mean(jnp.abs(doc_topic - state.doc_topic), axis=-1)
            keep = state.active[:, None]
            return _Sweep(
                state.iteration + 1,
                jnp.where(keep, doc_topic, state.doc_topic),
                jnp.where(keep, exp_doc_topic, state.exp_doc_topic),
                state.active & (change >= hyper.mean_change_tol),
            )

        return jax.lax.while_loop(cond, body, state)

    def _document_bound(self, log_gathered, x: Documents, doc_topic, hyper):
        """Each document's part of the variational bound, ``(n,)``. A ``logsumexp``
        of the logs, not the log of the sweeps' sums: with ``η = 1/K``, a word that
        no topic drew (a held-out word unseen in training) has ``E[log β_kw]`` about
        ``-K - log(topic size)`` in every topic, so every term ``θ_dk β_kw`` of its
        slot underflows float32 from ``K`` of about 90."""
        log_doc_topic = dirichlet_expectation(doc_topic)
        log_norm = jax.nn.logsumexp(log_doc_topic[:, :, None] + log_gathered, axis=1)  # (n, L)
        words = jnp.sum(jnp.where(x.counts > 0, x.counts * log_norm, 0.0), axis=-1)
        alpha = hyper.doc_topic_prior
        return words + _dirichlet_bound(alpha, doc_topic, log_doc_topic, self.n_topics)

    def e_step(self, params: LDAParams, x: Documents, weights, hyper):
        log_word_topic = self._log_word_topic(params)
        doc_topic, exp_doc_topic = self._sweeps(x, log_word_topic, weights, hyper)
        per_word, bound = _by_width(
            self._statistics,
            x,
            _compacts(*x.counts.shape, self.n_topics),
            log_word_topic,
            doc_topic,
            exp_doc_topic,
            weights,
            hyper,
        )
        # Σ_d n_dw exp(E log θ_dk) / norm_φ_dw times exp(E log β_kw): the expected
        # counts Σ_d n_dw φ_dwk.
        stats = LDAStats((per_word * jnp.exp(log_word_topic)).T)
        log_likelihood = jnp.sum(jnp.where(weights > 0, weights * bound, 0.0))
        return stats, log_likelihood

    def _statistics(self, x: Documents, log_word_topic, doc_topic, exp_doc_topic, weights, hyper):
        """At one width: ``Σ_d n_dw exp(E log θ_dk) / norm_φ_dw`` scattered onto the
        vocabulary ``(V, K)``, and each document's bound ``(n,)``."""
        log_gathered = self._gather(log_word_topic, x)
        eps = jnp.finfo(x.counts.dtype).eps
        norm_phi = jnp.einsum("nk,nkl->nl", exp_doc_topic, jnp.exp(log_gathered)) + eps
        used = weights[:, None] > 0
        ratio = jnp.where(used, weights[:, None] * x.counts / norm_phi, 0.0)  # (n, L)
        exp_doc = jnp.where(used, exp_doc_topic, 0.0)
        contributions = ratio[:, :, None] * exp_doc[:, None, :]  # (n, L, K)
        per_word = jnp.zeros((self.n_words, self.n_topics), contributions.dtype)
        per_word = per_word.at[x.word_ids.reshape(-1)].add(contributions.reshape(-1, self.n_topics))
        return per_word, self._document_bound(log_gathered, x, doc_topic, hyper)

    def m_step(self, stats: LDAStats, params, hyper) -> LDAParams:
        del params
        return LDAParams(hyper.topic_word_prior + stats.topic_word)

    # -- outputs of the topics alone --------------------------------------------------------
    def topic_bound(self, params: LDAParams, hyper: LDAHyper):
        """The topics' part of the variational bound (:func:`topic_bound`)."""
        return topic_bound(params, hyper)

    def exp_topic_word(self, params: LDAParams, hyper=None):
        """``exp(E[log β])`` of the topics, ``(K, V)`` (scikit-learn's
        ``exp_dirichlet_component_``)."""
        del hyper
        return jnp.exp(dirichlet_expectation(params.topic_word))

    # -- per-document outputs -------------------------------------------------------------
    def doc_topic(self, params: LDAParams, x: Documents, hyper=None):
        """Each document's unnormalised topic distribution ``γ`` ``(n, K)``
        (scikit-learn's ``_unnormalized_transform``)."""
        hyper = self.hyper(x.counts.dtype) if hyper is None else hyper
        weights = jnp.ones(x.counts.shape[:1], x.counts.dtype)
        return self._sweeps(x, self._log_word_topic(params), weights, hyper)[0]

    def log_prob(self, params: LDAParams, x: Documents, hyper=None):
        """Each document's part of the variational bound at its fitted ``γ`` ``(n,)``
        (a lower bound on its log-likelihood, less the topics' term)."""
        hyper = self.hyper(x.counts.dtype) if hyper is None else hyper
        weights = jnp.ones(x.counts.shape[:1], x.counts.dtype)
        log_word_topic = self._log_word_topic(params)
        doc_topic = self._sweeps(x, log_word_topic, weights, hyper)[0]
        narrows = _compacts(*x.counts.shape, self.n_topics)
        return _by_width(self._bound, x, narrows, log_word_topic, doc_topic, hyper)

    def _bound(self, x: Documents, log_word_topic, doc_topic, hyper):
        return self._document_bound(self._gather(log_word_topic, x), x, doc_topic, hyper)


def document_width(n_nonzero: int) -> int:
    """Padded words per document: the next of four steps per power of two (8, 10, 12,
    14, 16, 20, 24, 28, 32, 40, ...), so corpora of similar documents share compiled
    programs. The sweeps' work grows with the width: with the next power of two, a
    corpus whose widest document has 133 distinct words swept 256 slots (160 now).

    >>> [document_width(n) for n in (0, 8, 9, 100, 133)]
    [8, 8, 10, 112, 160]
    """
    n_nonzero = max(int(n_nonzero), 8)
    step = 1 << max((n_nonzero - 1).bit_length() - 3, 0)  # a quarter of the octave
    return -(-n_nonzero // step) * step


#: Each smaller working set of the sweeps is this many times smaller, down to
#: :data:`_SMALLEST_WORKING_SET` documents. Every working set and every width of
#: :func:`width_classes` is more code to compile: one E-step program of 1,024
#: documents (K = 50, L = 160) compiles in 4.3 s against 1.2 s with one loop.
_SHRINK = 4
_SMALLEST_WORKING_SET = 16
#: Chunks of fewer documents, or of documents of fewer ``K × L`` gathered entries,
#: are swept in one working set at one width: their sweeps cost less than
#: compiling more code (a corpus padded to 1,024 rows took 10.3 s to its first fit
#: with working sets and widths, 4.2 s without).
_MANY_DOCUMENTS = _SHRINK * _SMALLEST_WORKING_SET
_LARGE_DOCUMENTS = 1024


#: Elements of gathered ``exp(E[log β])`` (``row_width`` units) in one set of sweeps
#: over restarts: the engine's chunk of one restart (``jaxem.engine._CHUNK_ELEMENTS``).
_SET_ELEMENTS = 1 << 21


def _restarts_per_set(n_docs: int, row_width: int) -> int:
    """Restarts whose ``n_docs`` documents each fill one set of sweeps: as many
    rows as one restart's chunk holds (at least one restart).

    >>> _restarts_per_set(32, 6400), _restarts_per_set(256, 6400), _restarts_per_set(512, 6400)
    (10, 1, 1)
    """
    return max(1, _SET_ELEMENTS // max(1, row_width) // n_docs)


def _compacts(n_rows: int, width: int, n_topics: int) -> bool:
    """Whether sweeps over ``n_rows`` documents of ``width`` slots use working sets
    and narrower widths."""
    return n_rows >= _MANY_DOCUMENTS and n_topics * width >= _LARGE_DOCUMENTS


def _working_sets(n_docs: int) -> tuple[int, ...]:
    """Sizes of the working sets the sweeps compact to: ``n_docs``, then each
    :data:`_SHRINK` times smaller, down to :data:`_SMALLEST_WORKING_SET`.

    >>> _working_sets(256), _working_sets(20)
    ((256, 64, 16), (20,))
    """
    sizes = [int(n_docs)]
    while sizes[-1] // _SHRINK >= _SMALLEST_WORKING_SET:
        sizes.append(sizes[-1] // _SHRINK)
    return tuple(sizes)


#: Narrower widths a chunk may be swept at, besides the documents' own, each two
#: steps of :func:`document_width` below the previous (a factor of about 0.7).
_NARROWER_WIDTHS = 2
_WIDTH_STEPS = 2


def width_classes(width: int) -> tuple[int, ...]:
    """The widths a chunk of documents padded to ``width`` is swept at, widest first:
    ``width`` and up to two narrower ones, each two steps of :func:`document_width`
    below the previous (at least 8).

    >>> width_classes(160), width_classes(12), width_classes(8)
    ((160, 112, 80), (12, 8), (8,))
    """
    steps = [int(width)]
    n_words = int(width) - 1
    while n_words >= 8:
        narrower = document_width(n_words)
        if narrower < steps[-1]:
            steps.append(narrower)
        n_words = min(n_words, narrower) - 1
    return tuple(steps[::_WIDTH_STEPS][: _NARROWER_WIDTHS + 1])


def _by_width(step, x: Documents, narrows: bool, *args):
    """``step(x, *args)`` on ``x``'s slots cut to the narrowest of
    :func:`width_classes` that holds every word of the chunk.

    A chunk's sweeps cost its padded width: documents of a corpus are padded to
    its widest, while a chunk of typical ones (or, sorted by length, of similar
    ones) needs far fewer slots. The branch is picked per chunk from the counts
    alone (not batched over restarts, so ``lax.switch`` runs one branch). Small
    chunks take one width (``narrows`` false, see :func:`_compacts`)."""
    classes = width_classes(x.counts.shape[-1])
    if len(classes) == 1 or not narrows:
        return step(x, *args)
    slots = jnp.arange(1, x.counts.shape[-1] + 1)
    extent = jnp.max(jnp.where(x.counts != 0, slots, 0))
    # Branch i is the i-th widest class; take the narrowest class holding ``extent``.
    index = sum((extent <= narrower).astype(jnp.int32) for narrower in classes[1:])

    def cut(width):
        def branch(x, *args):
            narrow = x._replace(word_ids=x.word_ids[:, :width], counts=x.counts[:, :width])
            return step(narrow, *args)

        return branch

    return jax.lax.switch(index, [cut(width) for width in classes], x, *args)


def documents_from_counts(X, dtype, doc_topic_start=None, width=None) -> Documents:
    """:class:`Documents` (numpy) from a count matrix ``(n, V)``: dense or scipy.sparse
    CSR, never densified (a CSR matrix is read through its ``indptr``/``indices``/
    ``data``).

    >>> import numpy as np
    >>> docs = documents_from_counts(np.array([[0, 2, 0], [1, 0, 3]]), np.float64)
    >>> docs.word_ids[:, :2].tolist(), docs.counts[:, :2].tolist()
    ([[1, 0], [0, 2]], [[2.0, 0.0], [1.0, 3.0]])
    """
    if hasattr(X, "tocsr"):
        X = X.tocsr()
        indptr, indices, data = X.indptr, X.indices, X.data
    else:
        X = np.asarray(X)
        rows, indices = np.nonzero(X)
        data = X[rows, indices]
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=X.shape[0]))])
    lengths = np.diff(indptr)
    n_docs = lengths.shape[0]
    width = document_width(lengths.max(initial=0)) if width is None else int(width)
    position = np.arange(indices.shape[0]) - np.repeat(indptr[:-1], lengths)
    row = np.repeat(np.arange(n_docs), lengths)
    word_ids = np.zeros((n_docs, width), np.int32)
    counts = np.zeros((n_docs, width), dtype)
    word_ids[row, position] = indices
    counts[row, position] = data
    start = None if doc_topic_start is None else np.asarray(doc_topic_start, dtype)
    return Documents(word_ids, counts, start)


def lda(
    n_topics: int,
    n_words: int,
    *,
    doc_topic_prior: float | None = None,
    topic_word_prior: float | None = None,
    mean_change_tol: float = 1e-3,
    max_doc_update_iter: int = 100,
) -> LDA:
    """Latent Dirichlet allocation with ``n_topics`` topics over ``n_words`` words.

    Parameters
    ----------
    n_topics, n_words : sizes (static).
    doc_topic_prior, topic_word_prior : ``α`` and ``η``; default ``1 / n_topics``.
    mean_change_tol, max_doc_update_iter : the per-document fixed point's tolerance
        and sweep cap.

    Examples
    --------
    >>> import jax, numpy as np
    >>> import jaxem
    >>> from jaxem.models.lda import documents_from_counts
    >>> X = np.kron(np.eye(2, dtype=int), np.full((5, 3), 4))  # 10 documents, 6 words
    >>> model = jaxem.lda(2, 6)
    >>> res = jaxem.fit(model, documents_from_counts(X, np.float32),
    ...                 key=jax.random.key(0), n_restarts=4, max_iter=20)
    >>> res.params.topic_word.shape
    (2, 6)
    """
    if int(n_topics) < 1 or int(n_words) < 1:
        raise ValueError(f"n_topics and n_words must be at least 1, got {n_topics} and {n_words}.")
    return LDA(
        n_topics=int(n_topics),
        n_words=int(n_words),
        doc_topic_prior=doc_topic_prior,
        topic_word_prior=topic_word_prior,
        mean_change_tol=mean_change_tol,
        max_doc_update_iter=max_doc_update_iter,
    )
