"""LatentDirichletAllocation and the LDA model against scikit-learn and a naive numpy
reference, in float64.

One corpus shape (40 documents, 25 words, 4 topics) is shared by every test so the
compiled programs are shared.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.special import gammaln, psi
from sklearn.decomposition import LatentDirichletAllocation as SkLDA
from sklearn.utils.estimator_checks import parametrize_with_checks

import jaxem
from jaxem import engine
from jaxem.models.lda import _working_sets, documents_from_counts, topic_bound, width_classes

N_DOCS, N_WORDS, N_TOPICS = 40, 25, 4


def _corpus(seed=0):
    """Documents drawn from an LDA model (about 30 tokens each, a few empty)."""
    rng = np.random.RandomState(seed)
    topics = rng.dirichlet(np.full(N_WORDS, 0.2), size=N_TOPICS)
    mixes = rng.dirichlet(np.full(N_TOPICS, 0.3), size=N_DOCS)
    X = np.stack([rng.multinomial(rng.poisson(30), mix @ topics) for mix in mixes])
    X[[5, 17]] = 0  # documents with no words
    return X


def _mixed_lengths(seed, n_docs):
    """Documents of 4, 12 or 80 tokens: their sweeps converge after very different
    numbers of sweeps, so the working sets' tails are reached."""
    rng = np.random.RandomState(seed)
    topics = rng.dirichlet(np.full(N_WORDS, 0.2), size=N_TOPICS)
    mixes = rng.dirichlet(np.full(N_TOPICS, 0.3), size=n_docs)
    lengths = rng.choice([4, 12, 80], size=n_docs)
    return np.stack([rng.multinomial(n, mix @ topics) for n, mix in zip(lengths, mixes)])


# -- a naive numpy reference: scikit-learn's algorithm, document by document -----------------
def _dirichlet_expectation(alpha):
    return psi(alpha) - psi(alpha.sum(axis=-1, keepdims=True))


def _reference_e_step(topic_word, X, alpha, tol, max_iter, start=None):
    """``(gamma, stats, document bound terms)`` of Blei et al.'s fixed point."""
    n_docs = X.shape[0]
    exp_beta = np.exp(_dirichlet_expectation(topic_word))
    log_beta = _dirichlet_expectation(topic_word)
    gamma = np.ones((n_docs, topic_word.shape[0])) if start is None else start.copy()
    stats = np.zeros_like(topic_word)
    terms = np.zeros(n_docs)
    eps = np.finfo(np.float64).eps
    for d in range(n_docs):
        ids = np.nonzero(X[d])[0]
        counts = X[d, ids].astype(np.float64)
        g = gamma[d]
        exp_theta = np.exp(_dirichlet_expectation(g))
        for _ in range(max_iter):
            last = g
            norm = exp_theta @ exp_beta[:, ids] + eps
            g = alpha + exp_theta * ((counts / norm) @ exp_beta[:, ids].T)
            exp_theta = np.exp(_dirichlet_expectation(g))
            if np.mean(np.abs(last - g)) < tol:
                break
        gamma[d] = g
        norm = exp_theta @ exp_beta[:, ids] + eps
        stats[:, ids] += np.outer(exp_theta, counts / norm)
        log_theta = _dirichlet_expectation(g)
        joint = log_theta[:, None] + log_beta[:, ids]
        top = joint.max(axis=0)
        terms[d] = counts @ (top + np.log(np.exp(joint - top).sum(axis=0)))
        terms[d] += np.sum((alpha - g) * log_theta) + np.sum(gammaln(g) - gammaln(alpha))
        terms[d] += gammaln(alpha * len(g)) - gammaln(g.sum())
    return gamma, stats * exp_beta, terms


def _start(seed=1):
    return np.random.RandomState(seed).gamma(100.0, 0.01, (N_TOPICS, N_WORDS))


# -- the model ---------------------------------------------------------------------------
def test_e_step_matches_the_naive_reference(x64):
    X = _corpus()
    topic_word = _start()
    model = jaxem.lda(N_TOPICS, N_WORDS, mean_change_tol=1e-3)
    docs = documents_from_counts(X, np.float64)
    hyper = model.hyper(jnp.float64)
    params = jaxem.LDAParams(jnp.asarray(topic_word))
    stats, log_likelihood = model.e_step(params, docs, jnp.ones(N_DOCS), hyper)
    gamma, ref_stats, ref_terms = _reference_e_step(topic_word, X, 1 / N_TOPICS, 1e-3, 100)
    np.testing.assert_allclose(stats.topic_word, ref_stats, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(float(log_likelihood), ref_terms.sum(), rtol=1e-10)
    np.testing.assert_allclose(model.doc_topic(params, docs, hyper), gamma, rtol=1e-10)
    np.testing.assert_allclose(model.log_prob(params, docs, hyper), ref_terms, rtol=1e-10)


def test_statistics_are_additive_over_chunks_and_padding_changes_nothing(x64):
    X = _corpus()
    model = jaxem.lda(N_TOPICS, N_WORDS)
    params = jaxem.LDAParams(jnp.asarray(_start()))
    docs = documents_from_counts(X, np.float64)
    whole = engine.statistics(model, params, docs)
    chunked = engine.statistics(model, params, docs, chunk_size=7)
    np.testing.assert_allclose(chunked[0].topic_word, whole[0].topic_word, rtol=1e-12)
    np.testing.assert_allclose(chunked[1], whole[1], rtol=1e-12)
    hyper = model.hyper(jnp.float64)
    halves = [
        model.e_step(params, jax.tree.map(lambda a, s=s: a[s], docs), jnp.ones(20), hyper)
        for s in (slice(None, 20), slice(20, None))
    ]
    np.testing.assert_allclose(
        halves[0][0].topic_word + halves[1][0].topic_word, whole[0].topic_word, rtol=1e-12
    )
    np.testing.assert_allclose(halves[0][1] + halves[1][1], whole[1], rtol=1e-12)
    # Rows of weight 0 holding garbage, and documents with no words, change nothing.
    garbage = documents_from_counts(np.vstack([X, np.full((3, N_WORDS), 7)]), np.float64)
    weights = np.r_[np.ones(N_DOCS), np.zeros(3)]
    padded = engine.statistics(model, params, garbage, weights=weights)
    empty = documents_from_counts(np.vstack([X, np.zeros((5, N_WORDS))]), np.float64)
    with_empty = engine.statistics(model, params, empty)
    for other in (padded, with_empty):
        np.testing.assert_allclose(other[0].topic_word, whole[0].topic_word, rtol=1e-12)
        np.testing.assert_allclose(other[1], whole[1], rtol=1e-12)


def test_narrow_widths_and_smaller_working_sets_match_the_reference(x64, monkeypatch):
    """Chunks of 64 length-sorted documents of very different lengths: short chunks
    are swept at a narrower width than the corpus's widest document, and the
    documents still active move to a smaller working set; every output is still the
    document-by-document reference's. (Documents this small, K x L = 112, take the
    plain path by default: the test lowers the threshold; its shapes are its own, so
    no program traced under the default is reused.)"""
    monkeypatch.setattr(sys.modules["jaxem.models.lda"], "_LARGE_DOCUMENTS", 0)
    X = _mixed_lengths(3, 192)
    X = X[np.argsort(np.count_nonzero(X, axis=1), kind="stable")]
    docs = documents_from_counts(X, np.float64)
    classes = width_classes(docs.counts.shape[1])
    chunk_extents = [np.count_nonzero(X[i : i + 64], axis=1).max() for i in (0, 64, 128)]
    assert len(classes) == 3 and chunk_extents[0] <= classes[-1] < chunk_extents[-1]
    assert _working_sets(64) == (64, 16)
    model = jaxem.lda(N_TOPICS, N_WORDS)
    params = jaxem.LDAParams(jnp.asarray(_start()))
    stats, log_likelihood = engine.statistics(model, params, docs, chunk_size=64)
    gamma, ref_stats, ref_terms = _reference_e_step(_start(), X, 1 / N_TOPICS, 1e-3, 100)
    np.testing.assert_allclose(stats.topic_word, ref_stats, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(float(log_likelihood), ref_terms.sum(), rtol=1e-10)
    outputs = engine.evaluate(model, params, docs, ("doc_topic", "log_prob"), chunk_size=64)
    np.testing.assert_allclose(outputs[0], gamma, rtol=1e-10)
    np.testing.assert_allclose(outputs[1], ref_terms, rtol=1e-10)


def test_statistics_and_online_steps_refuse_a_restarts_mesh():
    """The documents' E-step splits rows only; a mesh with a restarts axis is refused
    with the fix (a one-device mesh is enough to check it)."""
    docs = documents_from_counts(_corpus(), np.float64)
    model = jaxem.lda(N_TOPICS, N_WORDS)
    params = jaxem.LDAParams(jnp.asarray(_start()[None]))
    mesh = jax.make_mesh((1,), ("restarts",))
    with pytest.raises(ValueError, match="statistics splits rows only.*jax.make_mesh"):
        engine.statistics(model, params, docs, restarts=True, mesh=mesh)
    with pytest.raises(ValueError, match="online_step splits rows only"):
        engine.online_step(model, None, docs, init_params=params, mesh=mesh)


@pytest.mark.parametrize("per_set", [3, 2])
def test_restarts_sweep_as_rows_of_one_working_set(x64, monkeypatch, request, per_set):
    """Batched over restarts, each (restart, document) pair is a row of one set of
    sweeps: chunks of 32 documents under 3 restarts fill working sets of 96 and 24
    rows. When fewer restarts fill a set (``per_set`` 2: sets of 2, the second
    completed with a copy), the sets are swept in turn. Every restart's statistics
    and outputs are still its own reference's; vmapped over data sets too (the
    generic batching rule)."""
    lda_module = sys.modules["jaxem.models.lda"]
    monkeypatch.setattr(lda_module, "_LARGE_DOCUMENTS", 0)
    X = _mixed_lengths(4, 64)
    docs = documents_from_counts(X, np.float64)
    assert _working_sets(3 * 32) == (96, 24)
    starts = [_start(seed) for seed in (1, 2, 3)]
    model = jaxem.lda(N_TOPICS, N_WORDS)
    if per_set < 3:  # a set of sweeps holds per_set restarts' chunks of 32 documents
        monkeypatch.setattr(lda_module, "_SET_ELEMENTS", per_set * 32 * model.row_width(docs))
        # Traced again under the patch, and not kept for later tests.
        engine.release_compiled_programs()
        request.addfinalizer(engine.release_compiled_programs)
    swept = []
    sweep_restarts = type(model)._sweep_restarts

    def spy(self, x, log_word_topic, *args):
        swept.append(log_word_topic.shape[0])
        return sweep_restarts(self, x, log_word_topic, *args)

    monkeypatch.setattr(type(model), "_sweep_restarts", spy)
    params = jaxem.LDAParams(jnp.asarray(np.stack(starts)))
    stats, log_likelihood = engine.statistics(model, params, docs, chunk_size=32, restarts=True)
    outputs = engine.evaluate(
        model, params, docs, ("doc_topic", "log_prob"), chunk_size=32, restarts=True
    )
    assert per_set in swept and not any(size > per_set for size in swept)
    for restart, start in enumerate(starts):
        gamma, ref_stats, ref_terms = _reference_e_step(start, X, 1 / N_TOPICS, 1e-3, 100)
        np.testing.assert_allclose(stats.topic_word[restart], ref_stats, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(float(log_likelihood[restart]), ref_terms.sum(), rtol=1e-10)
        np.testing.assert_allclose(outputs[0][restart], gamma, rtol=1e-10)
        np.testing.assert_allclose(outputs[1][restart], ref_terms, rtol=1e-10)
    if per_set < 3:
        return
    halves = jax.tree.map(lambda leaf: leaf.reshape((2, 32) + leaf.shape[1:]), docs)
    one = jaxem.LDAParams(params.topic_word[0])
    per_half = jax.vmap(model.doc_topic, in_axes=(None, 0))(one, halves)
    both = jax.vmap(model.doc_topic, in_axes=(0, 0))(jaxem.LDAParams(params.topic_word[:2]), halves)
    gamma = _reference_e_step(starts[0], X, 1 / N_TOPICS, 1e-3, 100)[0]
    np.testing.assert_allclose(per_half.reshape(64, N_TOPICS), gamma, rtol=1e-10)
    np.testing.assert_allclose(both[0], gamma[:32], rtol=1e-10)
    second = _reference_e_step(starts[1], X[32:], 1 / N_TOPICS, 1e-3, 100)[0]
    np.testing.assert_allclose(both[1], second, rtol=1e-10)


def test_restarts_share_one_restarts_chunk():
    """A batch pass over up to 8 restarts reads chunks of one restart's size (the
    model sweeps them set by set); beyond, chunks shrink so memory stays bounded."""
    from jaxem.estimators.lda import _restarts_chunk_size

    model = jaxem.lda(50, 5000)
    docs = documents_from_counts(np.ones((4096, 120), np.float32), np.float32)
    one = _restarts_chunk_size(model, docs, 1)
    assert one == engine.default_chunk_size(4096, 1, model.row_width(docs)) == 256
    assert _restarts_chunk_size(model, docs, 8) == one
    half = engine.default_chunk_size(4096, 2, model.row_width(docs))
    assert _restarts_chunk_size(model, docs, 16) == half < one


def test_outputs_come_back_in_the_rows_order():
    """The estimator sorts documents by length inside; transform and the bound do not
    depend on the order of X's rows."""
    X = _corpus()
    lda = jaxem.LatentDirichletAllocation(N_TOPICS, max_iter=2, random_state=0).fit(X)
    order = np.random.RandomState(0).permutation(N_DOCS)
    np.testing.assert_allclose(lda.transform(X[order]), lda.transform(X)[order], rtol=1e-12)
    np.testing.assert_allclose(lda.score(X[order]), lda.score(X), rtol=1e-12)


def test_batch_bound_never_decreases(x64):
    """Variational EM with the E-step converged tightly: the full bound (documents'
    terms + topics' term) rises at every M-step and E-step."""
    X = _corpus()
    model = jaxem.lda(N_TOPICS, N_WORDS, mean_change_tol=1e-12, max_doc_update_iter=2000)
    hyper = model.hyper(jnp.float64)
    docs = documents_from_counts(X, np.float64)
    params = jaxem.LDAParams(jnp.asarray(_start()))
    bounds = []
    for _ in range(12):
        stats, document_terms = engine.statistics(model, params, docs, hyper=hyper)
        bounds.append(float(document_terms) + float(topic_bound(params, hyper)))
        params = model.m_step(stats, params, hyper)
    steps = np.diff(bounds)
    assert np.all(steps >= -1e-9 * abs(bounds[-1])), steps
    assert bounds[-1] - bounds[0] > 1.0  # it moved: the check above is not vacuous


def test_engine_fit_runs_batched_restarts(x64):
    X = _corpus()
    model = jaxem.lda(N_TOPICS, N_WORDS)
    docs = documents_from_counts(X, np.float64)
    result = jaxem.fit(model, docs, key=jax.random.key(0), n_restarts=3, max_iter=30)
    assert result.params.topic_word.shape == (N_TOPICS, N_WORDS)
    assert np.all(np.isfinite(result.restarts.log_likelihood))
    # The M-step's topics hold every token once, plus the prior.
    total = np.asarray(result.params.topic_word).sum() - N_TOPICS * N_WORDS / N_TOPICS
    np.testing.assert_allclose(total, X.sum(), rtol=1e-9)


# -- the estimator against scikit-learn ------------------------------------------------------
def _pair(**options):
    kw = dict(n_components=N_TOPICS, random_state=0, **options)
    return SkLDA(**kw), jaxem.LatentDirichletAllocation(**kw)


@pytest.mark.parametrize("method", ["batch", "online"])
def test_fit_matches_scikit_learn_from_the_same_start(method):
    """Same random numbers (initial topics and each E-step's document starts): equal
    components_, perplexity and score to relative 1e-6 in float64."""
    X = _corpus()
    theirs, ours = _pair(
        learning_method=method, max_iter=6, batch_size=16, evaluate_every=2, perp_tol=1e-9
    )
    theirs.fit(X)
    ours.fit(sp.csr_matrix(X))
    assert ours.components_.dtype == np.float64
    np.testing.assert_allclose(ours.components_, theirs.components_, rtol=1e-6)
    np.testing.assert_allclose(
        ours.exp_dirichlet_component_, theirs.exp_dirichlet_component_, rtol=1e-6
    )
    np.testing.assert_allclose(ours.bound_, theirs.bound_, rtol=1e-6)
    np.testing.assert_allclose(ours.perplexity(X), theirs.perplexity(X), rtol=1e-6)
    np.testing.assert_allclose(ours.score(X), theirs.score(X), rtol=1e-6)
    np.testing.assert_allclose(ours.transform(X), theirs.transform(X), rtol=1e-5, atol=1e-9)
    assert (ours.n_iter_, ours.n_batch_iter_) == (theirs.n_iter_, theirs.n_batch_iter_)


def test_partial_fit_steps_match_scikit_learn():
    X = _corpus()
    theirs, ours = _pair(batch_size=16, total_samples=200, learning_offset=5.0)
    for step in range(3):
        theirs.partial_fit(X)
        ours.partial_fit(X)
        np.testing.assert_allclose(ours.components_, theirs.components_, rtol=1e-6)
        assert ours.n_batch_iter_ == theirs.n_batch_iter_, step
    np.testing.assert_allclose(
        ours.perplexity(X, sub_sampling=True), theirs.perplexity(X, sub_sampling=True), rtol=1e-6
    )


def test_non_integer_counts_are_accepted_as_scikit_learn_does():
    X = _corpus() * 0.5
    theirs, ours = _pair(max_iter=3)
    np.testing.assert_allclose(ours.fit(X).components_, theirs.fit(X).components_, rtol=1e-6)


def test_documents_without_words_change_nothing():
    """Empty documents appended: one pass draws the same starts for the other documents
    (the extra rows' draws come last), so the topics and the perplexity are unchanged.
    (Over more passes the extra draws shift later E-steps' random starts.)"""
    X = _corpus()
    _, plain = _pair(max_iter=1)
    _, padded = _pair(max_iter=1)
    plain.fit(X)
    padded.fit(sp.csr_matrix(np.vstack([X, np.zeros((6, N_WORDS))])))
    np.testing.assert_allclose(padded.components_, plain.components_, rtol=1e-12)
    np.testing.assert_allclose(padded.bound_, plain.bound_, rtol=1e-12)


def test_restarts_keep_restart_zero_and_pick_the_best():
    X = _corpus()
    single = jaxem.LatentDirichletAllocation(N_TOPICS, random_state=0, max_iter=5).fit(X)
    batch = jaxem.LatentDirichletAllocation(N_TOPICS, random_state=0, max_iter=5, n_init=4)
    batch.fit(X)
    np.testing.assert_allclose(batch.restarts_perplexity_[0], single.bound_, rtol=1e-10)
    assert batch.bound_ == pytest.approx(batch.restarts_perplexity_.min())
    assert batch.bound_ <= single.bound_


@pytest.mark.parametrize("method", ["batch", "online"])
def test_short_run_restarts_continue_the_best_after_restart_passes(x64, method, monkeypatch):
    """``restart_passes=2``: all restarts run two passes, then only the one with the
    highest bound continues, alone, and ends where a fit running every restart to
    the end leaves it; the bound compared is the one the second pass measured (its
    documents' part and the topics' part at the topics it started from), so the
    choice costs no extra pass."""
    from jaxem.estimators.lda import LatentDirichletAllocation as LDA

    X = _corpus()
    options = dict(random_state=2, max_iter=4, n_init=4, learning_method=method, batch_size=16)
    full = jaxem.LatentDirichletAllocation(N_TOPICS, **options).fit(X)
    steps = []  # (topics the step started from, its documents' bound)
    for name in ("statistics", "online_step"):
        step = getattr(engine, name)

        def recorded(model, params, *args, step=step, **kwargs):
            given = params if params is not None else kwargs["init_params"]
            given = given.params if isinstance(given, engine.OnlineState) else given
            out = step(model, params, *args, **kwargs)
            steps.append((given, np.asarray(out[1], np.float64)))
            return out

        monkeypatch.setattr(engine, name, recorded)
    steps_per_pass = 1 if method == "batch" else -(-N_DOCS // 16)
    sizes = [16] * (N_DOCS // 16) + [N_DOCS % 16]

    short = jaxem.LatentDirichletAllocation(N_TOPICS, restart_passes=2, **options)
    short.fit(X)
    assert [len(p.topic_word) for p, _ in steps] == [4] * 2 * steps_per_pass + [1] * 2 * (
        steps_per_pass
    )
    second_pass = steps[steps_per_pass : 2 * steps_per_pass]
    if method == "batch":
        documents = second_pass[0][1]
    else:  # online steps report each mini-batch's mean
        documents = sum(bound * size for (_, bound), size in zip(second_pass, sizes))
    compared = documents + short._topic_bounds(second_pass[0][0], np.float64)
    assert short.best_restart_ == int(np.argmax(compared))
    assert short.best_restart_ != int(np.argmax(compared - documents))  # documents decide

    favoured = (short.best_restart_ + 1) % 4  # the choice must follow the bound
    topic_bounds = LDA._topic_bounds

    def favour(self, params, dtype):
        bounds = topic_bounds(self, params, dtype)
        if len(bounds) > 1:
            bounds[favoured] += 1e12
        return bounds

    monkeypatch.setattr(LDA, "_topic_bounds", favour)
    short = jaxem.LatentDirichletAllocation(N_TOPICS, restart_passes=2, **options).fit(X)
    assert short.best_restart_ == favoured
    np.testing.assert_allclose(short.bound_, full.restarts_perplexity_[favoured], rtol=1e-8)
    assert np.isnan(np.delete(short.restarts_perplexity_, favoured)).all()
    assert short.restarts_perplexity_[favoured] == short.bound_


def test_restart_passes_past_the_fit_or_with_one_restart_change_nothing():
    X = _corpus()
    options = dict(random_state=0, max_iter=3)
    for n_init, restart_passes in ((4, 3), (4, 7), (1, 1)):
        plain = jaxem.LatentDirichletAllocation(N_TOPICS, n_init=n_init, **options).fit(X)
        short = jaxem.LatentDirichletAllocation(
            N_TOPICS, n_init=n_init, restart_passes=restart_passes, **options
        ).fit(X)
        np.testing.assert_array_equal(short.components_, plain.components_)
        np.testing.assert_array_equal(short.restarts_perplexity_, plain.restarts_perplexity_)


def test_float32_is_as_accurate_as_scikit_learns_float32():
    """float32 input: float32 attributes, as close to the float64 fit as scikit-learn's
    float32 fit is to its float64 one (the per-document fixed point run tightly, so
    its stopping sweep does not differ between precisions), and equal to scikit-learn's
    float32 fit to float32 rounding amplified by the iterations."""
    X = _corpus()
    options = dict(max_iter=4, mean_change_tol=1e-7, max_doc_update_iter=500)
    theirs64, ours64 = _pair(**options)
    theirs32, ours32 = _pair(**options)
    ours64.fit(X)
    ours32.fit(X.astype(np.float32))
    theirs64.fit(X)
    theirs32.fit(X.astype(np.float32))
    assert ours32.components_.dtype == np.float32
    assert ours32.exp_dirichlet_component_.dtype == np.float32
    assert ours32.transform(X.astype(np.float32)).dtype == np.float32

    def error(a, b):
        return np.max(np.abs(a.astype(np.float64) / b - 1))

    theirs = error(theirs32.components_, theirs64.components_)
    assert error(ours32.components_, ours64.components_) <= 1.5 * theirs
    assert error(ours32.components_, theirs32.components_) < 2e-5
    # The bound (score, perplexity) in float32 is float64's to float32 accuracy.
    X32 = X.astype(np.float32)
    assert abs(ours32.score(X32) / ours64.score(X) - 1) < 1e-6
    assert abs(ours32.perplexity(X32) / ours64.perplexity(X) - 1) < 1e-6


def test_float32_scores_words_unseen_in_training_with_many_topics():
    """With 100 topics (η = 0.01) a word no training document holds has
    ``θ_dk β_kw`` below float32's smallest number in every topic: the bound must
    still be finite and float64's to float32 accuracy (its logsumexp works in logs)."""
    rng = np.random.RandomState(0)
    X = rng.poisson(1.0, size=(40, 30)).astype(np.float64)
    X[:, -1] = 0  # the last word never appears in training
    held_out = X[:5].copy()
    held_out[:, -1] = 3
    scores = []
    for dtype in (np.float64, np.float32):
        lda = jaxem.LatentDirichletAllocation(100, max_iter=2, random_state=0)
        lda.fit(X.astype(dtype))
        scores.append(lda.score(held_out.astype(dtype)))
    assert np.isfinite(scores[1])
    assert abs(scores[1] / scores[0] - 1) < 1e-5


def test_second_fit_of_equal_shapes_compiles_nothing(count_compiles):
    first, second = _corpus(0), _corpus(3)
    jaxem.LatentDirichletAllocation(N_TOPICS, max_iter=2, random_state=0).fit_transform(first)
    with count_compiles() as counter:
        lda = jaxem.LatentDirichletAllocation(N_TOPICS, max_iter=3, random_state=1)
        lda.fit(second).transform(second)
    assert counter.count == 0


# -- bad input -----------------------------------------------------------------------------
def test_negative_counts_raise():
    X = _corpus().astype(float)
    X[3, 4] = -1.0
    with pytest.raises(ValueError, match="Negative values in data passed to LatentDirichlet"):
        jaxem.LatentDirichletAllocation(N_TOPICS).fit(X)
    with pytest.raises(ValueError, match="Negative values"):
        jaxem.LatentDirichletAllocation(N_TOPICS).fit(sp.csr_matrix(X))


def test_empty_vocabulary_raises():
    with pytest.raises(ValueError, match=r"0 feature\(s\)"):
        jaxem.LatentDirichletAllocation(N_TOPICS).fit(np.zeros((5, 0)))


def test_non_finite_counts_raise():
    X = _corpus().astype(float)
    X[0, 0] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        jaxem.LatentDirichletAllocation(N_TOPICS).fit(X)


def test_vocabulary_change_between_partial_fits_raises():
    X = _corpus()
    lda = jaxem.LatentDirichletAllocation(N_TOPICS, random_state=0).partial_fit(X)
    with pytest.raises(ValueError, match="X has 24 features, but LatentDirichletAllocation is"):
        lda.partial_fit(X[:, :-1])
    with pytest.raises(ValueError, match="expecting 25 features"):
        lda.transform(X[:, :-1])


@parametrize_with_checks([jaxem.LatentDirichletAllocation(n_components=3, max_iter=5)])
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


# -- the topics' outputs run as one engine program ----------------------------------------
def test_parameter_outputs_are_the_topics_bound_and_expectation(x64):
    rng = np.random.default_rng(0)
    topics = jaxem.LDAParams(jnp.asarray(rng.gamma(100.0, 0.01, size=(3, 4, 6))))
    model = jaxem.lda(4, 6, topic_word_prior=0.2)
    hyper = model.hyper(np.float64)
    bounds, expectation = engine.parameter_outputs(
        model, topics, ("topic_bound", "exp_topic_word"), hyper=hyper
    )
    for r, lam in enumerate(np.asarray(topics.topic_word)):
        np.testing.assert_allclose(expectation[r], np.exp(_dirichlet_expectation(lam)), rtol=1e-12)
        np.testing.assert_allclose(
            bounds[r], float(topic_bound(jaxem.LDAParams(jnp.asarray(lam)), hyper)), rtol=1e-12
        )
    with pytest.raises(ValueError, match="LDA has no parameter output 'doc_topic'"):
        engine.parameter_outputs(model, topics, "doc_topic")


def test_a_first_fit_compiles_programs_not_single_operations(count_compiles):
    """The estimator's host code runs the topics' bound and ``exp(E[log β])`` through
    the engine: op by op they compiled about 40 single primitives in a process's
    first fit of a shape (52 compiles in all, 12 now)."""
    X = np.random.RandomState(0).poisson(1.0, size=(37, 23)).astype(np.float64)
    with count_compiles() as counter:
        lda = jaxem.LatentDirichletAllocation(7, max_iter=2, random_state=0).fit(X)
        lda.score(X)
    assert counter.count <= 20, counter.count
    np.testing.assert_allclose(
        lda.exp_dirichlet_component_,
        np.exp(_dirichlet_expectation(lda.components_)),
        rtol=1e-12,
    )
