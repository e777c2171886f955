"""LDA: ``jaxem.LatentDirichletAllocation`` against scikit-learn's and gensim's LdaModel.

A synthetic corpus drawn from an LDA model (default 20,000 training documents plus
2,000 held out, 5,000 words, 50 topics, Poisson(100) tokens per document; topics
``Dir(0.05)``, document mixtures ``Dir(0.1)``), given to every side as the same
scipy.sparse CSR counts (gensim as its bag-of-words lists, built outside the clock).
Every side uses the same priors (``α = η = 1/K``), the same per-document
tolerance (mean change 1e-3, at most 100 sweeps) and the same passes.

Printed per learning method (batch, online with ``--batch-size`` documents per step):
wall seconds per pass (jaxem after a warm-up fit of the same shapes; its compile
time is the first fit's time less the warm one), and the held-out perplexity at the
end, computed for every side by the same code (jaxem's ``perplexity`` of the side's
topics ``λ``: scikit-learn's formula, the E-step started at ones) and, for
scikit-learn, by scikit-learn itself. Then 8 batched restarts (``n_init=8``) against
1: the time ratio and the held-out perplexity of the restart kept (lowest training
perplexity) against restart 0's; then short-run restarts (``restart_passes=P``: all
restarts run P passes, the best by its bound continues alone).

Run from the repository root::

    python -m benchmarks.lda             # the full corpus
    python -m benchmarks.lda --small     # 2,000 + 500 documents, 1,000 words, 10 topics
    python -m benchmarks.lda --devices 2 --no-gensim   # + rows with mesh=2

``--devices N`` adds jaxem's rows with every E-step's documents split over N
devices (``mesh=N``) and runs the restarts with ``mesh=N``; on a CPU the script
first makes N host devices (``XLA_FLAGS=--xla_force_host_platform_device_count=N``,
before JAX starts), so jaxem uses as many cores as scikit-learn's ``n_jobs=-1``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import scipy.sparse as sp

from benchmarks._harness import LAST_OTHERS_CPU, timed_runs


def make_corpus(n_docs, n_words, n_topics, length, seed=0):
    """CSR counts ``(n_docs, n_words)`` drawn from an LDA model."""
    rng = np.random.default_rng(seed)
    topics = rng.dirichlet(np.full(n_words, 0.05), size=n_topics)
    mixes = rng.dirichlet(np.full(n_topics, 0.1), size=n_docs)
    lengths = rng.poisson(length, size=n_docs)
    indptr, indices, data = [0], [], []
    for mix, n_tokens in zip(mixes, lengths):  # built sparse: the dense matrix is 800 MB
        words, counts = np.unique(
            rng.choice(n_words, size=n_tokens, p=mix @ topics), return_counts=True
        )
        indices.append(words)
        data.append(counts.astype(np.float64))
        indptr.append(indptr[-1] + words.size)
    return sp.csr_matrix(
        (np.concatenate(data), np.concatenate(indices), np.asarray(indptr)),
        shape=(n_docs, n_words),
    )


def _bag_of_words(X):
    """gensim's corpus: per document a list of (word id, count)."""
    bags = []
    for d in range(X.shape[0]):
        span = slice(X.indptr[d], X.indptr[d + 1])
        bags.append(list(zip(X.indices[span].tolist(), X.data[span].tolist())))
    return bags


def held_out_perplexity(topic_word, X_test, n_topics):
    """Perplexity of ``X_test`` under topics ``λ`` (scikit-learn's formula, by jaxem)."""
    import jaxem
    from jaxem.estimators.lda import _exp_dirichlet_expectation

    evaluator = jaxem.LatentDirichletAllocation(n_topics)
    evaluator.components_ = np.asarray(topic_word, np.float64)
    evaluator.exp_dirichlet_component_ = _exp_dirichlet_expectation(evaluator.components_)
    evaluator.doc_topic_prior_ = evaluator.topic_word_prior_ = 1.0 / n_topics
    evaluator.n_features_in_ = X_test.shape[1]
    return float(evaluator.perplexity(X_test))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--restarts", type=int, default=8, help="0: skip the restarts")
    parser.add_argument(
        "--restart-passes",
        type=int,
        nargs="*",
        default=[2, 3],
        help="short-run restarts: also fit --restarts restarts with restart_passes=P",
    )
    parser.add_argument("--no-gensim", action="store_true")
    parser.add_argument("--devices", type=int, default=1, help="also rows with mesh=N")
    args = parser.parse_args()
    if args.devices > 1:
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + f" --xla_force_host_platform_device_count={args.devices}"
        )
    if args.small:
        n_train, n_test, n_words, n_topics = 2_000, 500, 1_000, 10
    else:
        n_train, n_test, n_words, n_topics = 20_000, 2_000, 5_000, 50

    import jax
    import sklearn
    from sklearn.decomposition import LatentDirichletAllocation as SklearnLDA

    import jaxem

    X = make_corpus(n_train + n_test, n_words, n_topics, 100)
    X_train, X_test = X[:n_train], X[n_train:]
    gensim = None
    if not args.no_gensim:
        try:
            import gensim
            from gensim.models import LdaModel
        except ImportError:
            print("gensim is not installed (pip install gensim): its rows are left out")
    print(
        f"documents {n_train} (+{n_test} held out), words {n_words}, topics {n_topics}, "
        f"tokens {int(X_train.sum())}, passes {args.passes}, online batch {args.batch_size}; "
        f"jax {jax.__version__} ({jax.device_count()} devices), scikit-learn {sklearn.__version__}"
        + (f", gensim {gensim.__version__}" if gensim else "")
        + f", {platform.processor() or platform.machine()}"
    )
    common = dict(
        n_components=n_topics,
        max_iter=args.passes,
        batch_size=args.batch_size,
        mean_change_tol=1e-3,
        max_doc_update_iter=100,
        random_state=0,
    )
    rows = []

    def record(side, method, seconds, first, topic_word, own=None):
        perplexity = held_out_perplexity(topic_word, X_test, n_topics)
        rows.append(
            dict(
                side=side,
                method=method,
                per_pass=seconds / args.passes,
                compile=None if first is None else first - seconds,
                perplexity=perplexity,
                own=own,
                others=list(LAST_OTHERS_CPU),
            )
        )
        print(f"  {rows[-1]}", flush=True)

    meshes = [None] if args.devices < 2 else [None, args.devices]
    for method in ("batch", "online"):
        for dtype, mesh in [(d, m) for d in (np.float64, np.float32) for m in meshes]:
            data = X_train.astype(dtype)

            def fit(data=data, method=method, mesh=mesh):
                return jaxem.LatentDirichletAllocation(
                    learning_method=method, mesh=mesh, **common
                ).fit(data)

            start = time.perf_counter()
            fit()
            first = time.perf_counter() - start
            seconds, _, model = timed_runs(fit)
            side = f"jaxem {np.dtype(dtype).name}" + ("" if mesh is None else f" mesh={mesh}")
            record(side, method, seconds, first, model.components_)

        def sklearn_fit(method=method):
            return SklearnLDA(learning_method=method, n_jobs=-1, **common).fit(X_train)

        seconds, _, peer = timed_runs(sklearn_fit)
        record(
            "scikit-learn float64 n_jobs=-1",
            method,
            seconds,
            None,
            peer.components_,
            own=float(peer.perplexity(X_test)),
        )
        if gensim:
            corpus = _bag_of_words(X_train)

            def gensim_fit(method=method, corpus=corpus):
                return LdaModel(
                    corpus,
                    num_topics=n_topics,
                    id2word={w: str(w) for w in range(n_words)},
                    passes=args.passes,
                    chunksize=args.batch_size if method == "online" else n_train,
                    update_every=1 if method == "online" else 0,
                    alpha="symmetric",
                    eta=1.0 / n_topics,
                    decay=0.7,
                    offset=10.0,
                    iterations=100,
                    gamma_threshold=1e-3,
                    eval_every=None,
                    random_state=0,
                )

            seconds, _, peer = timed_runs(gensim_fit)
            record("gensim LdaModel float64", method, seconds, None, peer.state.get_lambda())

    print()
    print(
        "| method | side | s / pass | compile s | held-out perplexity | own perplexity | "
        "speed-up vs scikit-learn | others' CPU share |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        reference = next(
            r for r in rows if r["method"] == row["method"] and r["side"].startswith("scikit")
        )
        compile_s = "-" if row["compile"] is None else f"{row['compile']:.2f}"
        own = "-" if row["own"] is None else f"{row['own']:.2f}"
        print(
            f"| {row['method']} | {row['side']} | {row['per_pass']:.3f} | {compile_s} | "
            f"{row['perplexity']:.2f} | {own} | {reference['per_pass'] / row['per_pass']:.2f}x | "
            f"{', '.join(f'{o:.2f}' for o in row['others'])} |"
        )

    # -- batched restarts -------------------------------------------------------------------
    if args.restarts < 1:
        return
    print()
    data = X_train.astype(np.float32)
    results = {}
    for n_init in (1, args.restarts):

        def fit(n_init=n_init):
            return jaxem.LatentDirichletAllocation(n_init=n_init, mesh=meshes[-1], **common).fit(
                data
            )

        fit()  # compile
        seconds, _, model = timed_runs(fit)
        results[n_init] = (seconds, model)
    single_s, single = results[1]
    many_s, many = results[args.restarts]
    print(
        f"restarts (batch, float32, mesh={meshes[-1]}): {args.restarts} restarts "
        f"{many_s:.2f} s, 1 restart "
        f"{single_s:.2f} s, ratio {many_s / single_s:.2f}x; held-out perplexity of the kept "
        f"restart ({many.best_restart_}) "
        f"{held_out_perplexity(many.components_, X_test, n_topics):.2f}, of 1 restart "
        f"{held_out_perplexity(single.components_, X_test, n_topics):.2f}; training "
        f"perplexities {np.round(many.restarts_perplexity_, 2).tolist()}"
    )
    for passes in args.restart_passes:  # the programs of both restart counts are compiled

        def short_fit(passes=passes):
            return jaxem.LatentDirichletAllocation(
                n_init=args.restarts, restart_passes=passes, mesh=meshes[-1], **common
            ).fit(data)

        short_s, _, short = timed_runs(short_fit)
        print(
            f"short-run restarts (restart_passes={passes}): {args.restarts} restarts "
            f"{short_s:.2f} s, ratio {short_s / single_s:.2f}x 1 restart; held-out "
            f"perplexity of the kept restart ({short.best_restart_}) "
            f"{held_out_perplexity(short.components_, X_test, n_topics):.2f}"
        )


if __name__ == "__main__":
    main()
