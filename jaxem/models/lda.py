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
one ``lax.while_loop``; a document that has converged is frozen by a mask while
the others go on. The statistics are the expected word-topic counts
``Σ_d n_dw φ_dwk`` ``(K, V)``, sums over documents, so chunking, restarts,
padding (weight 0) and online EM apply unchanged. The M-step is
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
    """``ψ(x)`` for ``x > 0``: the recurrence ``ψ(x) = ψ(x + 10) - Σ_{i<10} 1/(x + i)``
    and the asymptotic series at ``x + 10``, to 2e-15 relative in float64 (as
    ``jax.scipy.special.digamma``, whose reflection and Lanczos branches XLA:CPU runs
    7x slower: ψ of every document's ``γ`` is most of an E-step sweep's work).

    >>> import jax.numpy as jnp
    >>> round(float(_digamma(jnp.array(1.0))), 6)  # -Euler's constant
    -0.577216
    """
    shift = 10
    recurrence = sum(1.0 / (x + i) for i in range(shift))
    y = x + shift
    inv = 1.0 / y
    inv2 = inv * inv
    # Bernoulli numbers' terms B_2j / (2j y^2j), j = 1..7; the next is below 1e-16 at y >= 10.
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

    # -- hyperparameters and sizes ---------------------------------------------------------
    def hyper(self, dtype) -> LDAHyper:
        default = 1.0 / self.n_topics
        alpha = default if self.doc_topic_prior is None else self.doc_topic_prior
        eta = default if self.topic_word_prior is None else self.topic_word_prior
        return LDAHyper(
            doc_topic_prior=jnp.asarray(alpha, dtype),
            topic_word_prior=jnp.asarray(eta, dtype),
            mean_change_tol=jnp.asarray(self.mean_change_tol, dtype),
            max_doc_update_iter=jnp.asarray(self.max_doc_update_iter, jnp.int32),
        )

    def row_width(self, x) -> int:
        """One sweep over a document touches ``K × L`` entries, and a chunk sweeps until
        its slowest document converges: counting four sweeps' worth keeps chunks small
        (tens to hundreds of documents), so one slow document holds few others."""
        return 4 * self.n_topics * int(x.word_ids.shape[-1])

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
    def _gather(params: LDAParams, x: Documents):
        """``E[log β]`` at each document's words, ``(n, K, L)``: words last, the layout
        in which XLA:CPU runs the sweep's two batched products and the bound's
        logsumexp 3-10x faster than in the gather's own ``(n, L, K)``."""
        log_topic_word = dirichlet_expectation(params.topic_word)  # (K, V)
        return jnp.swapaxes(log_topic_word.T[x.word_ids], 1, 2)

    def _sweeps(self, log_gathered, x: Documents, weights, hyper):
        """Every document's ``γ`` at the fixed point, the gathered
        ``exp(E[log β])`` ``(n, K, L)`` and the final ``exp(E[log θ])``."""
        counts = x.counts
        dtype = counts.dtype
        n_docs = counts.shape[0]
        # exp after the gather: one gather serves the sweeps and the bound.
        gathered = jnp.exp(log_gathered)
        if x.doc_topic_start is None:
            start = jnp.ones((n_docs, self.n_topics), dtype)
        else:  # padding rows arrive as zeros: any positive start will do for them
            start = x.doc_topic_start.astype(dtype)
            usable = (weights > 0) & jnp.all(start > 0, axis=-1)
            start = jnp.where(usable[:, None], start, jnp.ones((), dtype))
        eps = jnp.finfo(dtype).eps
        alpha = hyper.doc_topic_prior

        def cond(state: _Sweep):
            return (state.iteration < hyper.max_doc_update_iter) & jnp.any(state.active)

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

        first = _Sweep(
            jnp.asarray(0, jnp.int32),
            start,
            jnp.exp(dirichlet_expectation(start)),
            weights > 0,
        )
        final = jax.lax.while_loop(cond, body, first)
        return final.doc_topic, final.exp_doc_topic, gathered

    def _document_bound(self, log_gathered, x: Documents, doc_topic, hyper):
        """Each document's part of the variational bound, ``(n,)``."""
        log_doc_topic = dirichlet_expectation(doc_topic)
        log_norm = jax.nn.logsumexp(log_doc_topic[:, :, None] + log_gathered, axis=1)  # (n, L)
        words = jnp.sum(jnp.where(x.counts > 0, x.counts * log_norm, 0.0), axis=-1)
        alpha = hyper.doc_topic_prior
        return words + _dirichlet_bound(alpha, doc_topic, log_doc_topic, self.n_topics)

    def e_step(self, params: LDAParams, x: Documents, weights, hyper):
        log_gathered = self._gather(params, x)
        doc_topic, exp_doc_topic, gathered = self._sweeps(log_gathered, x, weights, hyper)
        eps = jnp.finfo(x.counts.dtype).eps
        norm_phi = jnp.einsum("nk,nkl->nl", exp_doc_topic, gathered) + eps
        used = weights[:, None] > 0
        ratio = jnp.where(used, weights[:, None] * x.counts / norm_phi, 0.0)  # (n, L)
        exp_doc = jnp.where(used, exp_doc_topic, 0.0)
        # Σ_d n_dw exp(E log θ_dk) / norm_φ_dw, scattered onto the vocabulary, then
        # times exp(E log β_kw): the expected counts Σ_d n_dw φ_dwk.
        contributions = ratio[:, :, None] * exp_doc[:, None, :]  # (n, L, K)
        per_word = jnp.zeros((self.n_words, self.n_topics), contributions.dtype)
        per_word = per_word.at[x.word_ids.reshape(-1)].add(contributions.reshape(-1, self.n_topics))
        exp_topic_word = jnp.exp(dirichlet_expectation(params.topic_word))
        stats = LDAStats(per_word.T * exp_topic_word)
        bound = self._document_bound(log_gathered, x, doc_topic, hyper)
        log_likelihood = jnp.sum(jnp.where(weights > 0, weights * bound, 0.0))
        return stats, log_likelihood

    def m_step(self, stats: LDAStats, params, hyper) -> LDAParams:
        del params
        return LDAParams(hyper.topic_word_prior + stats.topic_word)

    # -- per-document outputs -------------------------------------------------------------
    def doc_topic(self, params: LDAParams, x: Documents, hyper=None):
        """Each document's unnormalised topic distribution ``γ`` ``(n, K)``
        (scikit-learn's ``_unnormalized_transform``)."""
        hyper = self.hyper(x.counts.dtype) if hyper is None else hyper
        weights = jnp.ones(x.counts.shape[:1], x.counts.dtype)
        return self._sweeps(self._gather(params, x), x, weights, hyper)[0]

    def log_prob(self, params: LDAParams, x: Documents, hyper=None):
        """Each document's part of the variational bound at its fitted ``γ`` ``(n,)``
        (a lower bound on its log-likelihood, less the topics' term)."""
        hyper = self.hyper(x.counts.dtype) if hyper is None else hyper
        weights = jnp.ones(x.counts.shape[:1], x.counts.dtype)
        log_gathered = self._gather(params, x)
        doc_topic = self._sweeps(log_gathered, x, weights, hyper)[0]
        return self._document_bound(log_gathered, x, doc_topic, hyper)


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
