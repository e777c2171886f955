"""The contracts: what a model and a family provide, and what a fit reports.

Every hook is declared here, optional ones included, with its signature and its
meaning (as optax documents ``GradientTransformation``). Families and models
subclass these Protocols explicitly, so the optional hooks come with their
default behaviour and nobody discovers them with ``getattr``.

Conventions: key first, then parameters, then data; ``x`` is a chunk of rows (or
of sequences, for sequence models) and ``weights`` its per-row weights, where a
weight of 0 marks padding and must change nothing whatever the row holds.
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar, NamedTuple, Protocol

import chex
import jax
import jax.numpy as jnp

from jaxem import ops

__all__ = [
    "padded_rows",
    "finely_padded_rows",
    "Status",
    "STATUS_MESSAGES",
    "Chunks",
    "Family",
    "Seeding",
    "Model",
    "ASSIGNMENTS",
    "check_assignment",
]

Array = chex.Array
PRNGKey = chex.PRNGKey


#: Data sets up to this many rows share one bucket: there, compiling costs far more
#: than the padded rows, and cross-validation folds and refits then share programs.
_SMALLEST_BUCKET = 1024
#: Up to this many rows, buckets are powers of two.
_POWER_OF_TWO_ROWS = 2048


def padded_rows(n_rows: int) -> int:
    """Bucketed row count: 1024 up to 1024 rows, 2048 up to 2048, beyond that the next
    multiple of 1/32 of the next power of two (< 6.25 % padding).

    >>> [padded_rows(n) for n in (1, 150, 2048, 2049, 10_000, 10_257)]
    [1024, 1024, 2048, 2176, 10240, 10752]
    """
    if n_rows <= _SMALLEST_BUCKET:
        return _SMALLEST_BUCKET
    power = 1 << (n_rows - 1).bit_length()
    if n_rows <= _POWER_OF_TWO_ROWS:
        return power
    step = power // 32  # power < 2 n_rows, so the padding is below n_rows / 16
    return -(-n_rows // step) * step


def finely_padded_rows(n_rows: int) -> int:
    """A finer bucket for rows that are expensive (whole sequences): a multiple of
    ``2**(floor(log2 n) - 4)``, so padding stays below 1/16 of the rows.

    >>> [finely_padded_rows(n) for n in (1, 3, 17, 100, 1000)]
    [1, 3, 17, 100, 1024]
    """
    step = 1 << max(0, int(n_rows).bit_length() - 5)
    return -(-int(n_rows) // step) * step


class Status(enum.IntEnum):
    """How a restart ended; stored on the device as ``int32``."""

    RUNNING = 0
    CONVERGED = 1
    MAX_ITER = 2
    NON_FINITE = 3

    @property
    def message(self) -> str:
        return STATUS_MESSAGES[self]


STATUS_MESSAGES = {
    Status.RUNNING: "running",
    Status.CONVERGED: "converged",
    Status.MAX_ITER: "reached max_iter before converging",
    Status.NON_FINITE: "non-finite log-likelihood or parameters",
}


#: How a model's E-step assigns rows (or a sequence's steps) to components (states):
#: ``"soft"`` posterior probabilities (EM), ``"hard"`` the most probable assignment
#: (classification EM, Celeux and Govaert 1992), ``"stochastic"`` an assignment drawn
#: from the posterior (stochastic EM, Celeux and Diebolt 1985).
ASSIGNMENTS = ("soft", "hard", "stochastic")


def check_assignment(assignment) -> None:
    """Raise ``ValueError`` unless ``assignment`` is one of :data:`ASSIGNMENTS`."""
    if assignment not in ASSIGNMENTS:
        raise ValueError(f"assignment must be one of {ASSIGNMENTS}, got {assignment!r}.")


class Chunks(NamedTuple):
    """Data cut into equal chunks along its first axis.

    ``x`` is any pytree whose leaves have shape ``(n_chunks, chunk_size, ...)``;
    ``weights`` has shape ``(n_chunks, chunk_size)``. Padding rows have weight 0.
    """

    x: Any
    weights: jax.Array

    @property
    def n_chunks(self) -> int:
        return self.weights.shape[0]

    @property
    def chunk_size(self) -> int:
        return self.weights.shape[1]

    def flat(self):
        """``(x, weights)`` with the chunk axes merged (a reshape, no copy)."""
        merge = lambda leaf: leaf.reshape((-1,) + leaf.shape[2:])  # noqa: E731
        return jax.tree.map(merge, self.x), self.weights.reshape(-1)


class Family(Protocol):
    """``K`` component distributions in exponential-family form.

        log p_k(x) = features(x) · θ_k + bias_k + log_base_measure(x)

    so that the log-densities of all components for a chunk of rows are one matrix
    product and the expected sufficient statistics one more (``respᵀ features``).
    Models only call :meth:`log_densities` and :meth:`statistics`, whose defaults
    are these products; a family whose expanded form cancels in floating point
    overrides them (the Gaussian works about each component's mean). Mixtures and
    HMMs use the same family object. A family is a frozen dataclass (hashable: a
    static argument of compiled code); numeric hyperparameters are fields with
    ``compare=False`` handed to compiled code by :meth:`hyper`.

    A family owns everything about its distribution: the support check, the dtype
    its data needs, its initial parameters from data, sampling, and the conversion
    between its parameters and the layout users see. Models and estimators never
    branch on which family they hold.
    """

    #: hmmlearn's letters for this family's parameters, in the order of its params
    #: NamedTuple (``"mc"`` for Gaussian means and covariances). An HMM whose
    #: ``update`` lacks a letter keeps that parameter (see :meth:`keep_fixed`).
    update_letters: ClassVar[str] = ""

    # -- required --------------------------------------------------------------------------
    def hyper(self, dtype) -> Any:
        """Numeric hyperparameters as a pytree of arrays of ``dtype``."""
        ...

    def check_data(self, x) -> None:
        """Raise ``ValueError`` naming the problem and the fix if ``x`` (numpy, 2-D)
        is outside the support."""
        ...

    def features(self, x: Array) -> Array:
        """Sufficient-statistic map ``φ(x)``: ``(n, n_features) -> (n, F)``, floating."""
        ...

    def log_base_measure(self, x: Array) -> Array:
        """Part of the log-density free of parameters, shape ``(n,)``."""
        ...

    def natural_parameters(self, params) -> tuple[Array, Array]:
        """``(θ, bias)`` of shapes ``(K, F)`` and ``(K,)``."""
        ...

    def m_step(self, stats, counts: Array, hyper) -> Any:
        """Parameters from the weighted statistics ``stats`` (what :meth:`statistics`
        returns, merged over chunks by :meth:`combine_stats`: by default the feature
        sums ``(K, F)``) and the weights ``(K,)``.

        A component with a count of 0 must still get finite parameters whenever
        ``hyper`` regularises it (for example ``reg_covar > 0``).
        """
        ...

    def n_parameters(self, n_components: int, n_features: int) -> int:
        """Number of free parameters of ``n_components`` components."""
        ...

    def sample(self, key: PRNGKey, params, labels: Array) -> Array:
        """One draw per entry of ``labels`` from the labelled component."""
        ...

    # -- optional, with defaults -------------------------------------------------------------
    def log_densities(self, params, x: Array) -> Array:
        """``(n, K)`` log-densities of every row under every component. Default: the
        one product ``features(x) @ θᵀ + bias + log_base_measure(x)``; families whose
        expanded form cancels (Gaussian) compute it about the component instead."""
        theta, bias = self.natural_parameters(params)
        return self.features(x) @ theta.T + bias + self.log_base_measure(x)[:, None]

    def statistics(self, params, x: Array, resp: Array) -> Any:
        """Weighted statistics of rows ``x`` under responsibilities ``resp``
        ``(n, K)``, for :meth:`m_step`. ``params`` are the E-step's parameters (None
        at initialisation). Statistics of chunks of rows merge with
        :meth:`combine_stats`. Default: the feature sums ``respᵀ features(x)``."""
        del params
        return resp.T @ self.features(x).astype(resp.dtype)

    def combine_stats(self, a, b):
        """The statistics of two chunks of rows together; associative and
        commutative. Default: their sum."""
        return ops.tree_add(a, b)

    def impute(self, params, x: Array) -> Array:
        """Rows ``x`` ``(n, D)`` with missing entries (NaN) replaced by their
        conditional means under each component: ``(n, K, D)``, or ``(n, 1, D)`` when
        the same for every component. Families that take missing entries override
        it; default: the rows as they are."""
        del params
        return x[:, None, :]

    def scale_stats(self, stats, factor):
        """Statistics of rows whose weights are all multiplied by ``factor`` (online
        EM mixes running and new statistics with it). Default: every leaf times
        ``factor`` (sums); statistics holding means keep those."""
        return jax.tree.map(lambda leaf: leaf * factor, stats)

    def log_prior(self, params, hyper, active: Array) -> Array:
        """Log density, up to a constant, of the prior whose pseudo-counts
        :meth:`m_step` adds (MAP EM), at the components where ``active`` ``(K,)`` is
        True; the model adds it to the monitored objective. Default: 0 (no prior)."""
        del params, hyper, active
        return jnp.zeros(())

    def data_dtype(self, compute_dtype):
        """dtype the data is stored in on the device (integer symbols stay integers)."""
        return compute_dtype

    def component_width(self, x: Array) -> int:
        """Per-row, per-component size of the E-step's largest intermediate for rows
        ``x``; a mixture multiplies it by its number of components to size the
        engine's chunks. Default: 1 (the ``(n, K)`` log-densities)."""
        del x
        return 1

    def seeding_points(self, x: Array) -> Array:
        """Floating ``(n, P)`` points that distance-based seeding (k-means++, Lloyd)
        works on. Default: the features."""
        return self.features(x)

    def seeding_key(self) -> Any:
        """A hashable value, equal for two families exactly when their
        :meth:`seeding_points` are the same function. Models that seed on those points
        then share one compiled seeding program (see :meth:`Model.seeding`): a
        Gaussian's points do not depend on its covariance type, so a sweep over
        covariance types seeds with one program. Default: the family itself (equal
        families only)."""
        return self

    def params_from_rows(self, rows: Array, hyper) -> Any:
        """``K`` components, component ``k`` fitted to the single row ``rows[k]``.

        Default: the M-step from one-hot responsibilities. Families whose moment
        form cancels for one point (Gaussian) compute it exactly instead.
        """
        one_hot = jnp.eye(rows.shape[0], dtype=self.features(rows).dtype)
        return self.m_step(self.statistics(None, rows, one_hot), one_hot.sum(0), hyper)

    def initial_params(self, key: PRNGKey, chunks: Chunks, n_components: int, hyper):
        """Data-driven initial parameters of ``n_components`` components from all rows
        (hmmlearn's emission init). ``chunks`` holds the rows (already in
        :meth:`data_dtype`; weight 0 marks padding, which may hold anything): go
        through them chunk by chunk (``jaxem._iterate.chunked_sum``) so memory stays
        O(chunk) and sharded rows work. Default: the M-step from random soft
        assignments of the rows (Dirichlet(1) draws, one key per row)."""
        from jaxem import _iterate  # the engine's core, imported when the hook runs

        dtype = chunks.weights.dtype
        alpha = jnp.ones((n_components,), dtype)

        def chunk_statistics(data, weights):
            x, number = data
            keys = _iterate.row_keys(key, number, weights.shape[0])
            resp = jax.vmap(lambda k: jax.random.dirichlet(k, alpha, dtype=dtype))(keys)
            resp = resp * weights[:, None]
            return resp.sum(0), self.statistics(None, x, resp)

        numbered = Chunks((chunks.x, _iterate.chunk_indices(chunks.n_chunks)), chunks.weights)
        counts, stats = _iterate.chunked_sum(
            chunk_statistics,
            numbered,
            lambda a, b: (a[0] + b[0], self.combine_stats(a[1], b[1])),
        )
        return self.m_step(stats, counts, hyper)

    def keep_fixed(self, old, new, update: str, stats, counts, hyper):
        """``new`` with the parameters whose letter is missing from ``update`` taken
        from ``old`` (the E-step's parameters, which ``stats`` is about). Default: all
        or nothing on :attr:`update_letters`."""
        del stats, counts, hyper
        return new if any(letter in update for letter in self.update_letters) else old

    def where_components(self, keep: Array, on_true, on_false):
        """Per component: ``on_true``'s parameters where ``keep`` ``(K,)`` else
        ``on_false``'s. Default: every leaf has a leading component axis."""
        return jax.tree.map(
            lambda a, b: jnp.where(keep.reshape((-1,) + (1,) * (a.ndim - 1)), a, b),
            on_true,
            on_false,
        )

    def take_components(self, params, index: Array):
        """The components listed in ``index`` (in that order)."""
        return jax.tree.map(lambda leaf: leaf[index], params)

    def unconstrain(self, params) -> Any:
        """The parameters as a pytree of arrays free of constraints (positivity,
        sum to one), so that any affine combination of them is valid parameters
        again after :meth:`constrain`. SQUAREM (``accelerate="squarem"``)
        extrapolates there. Entries that are ``-inf`` (probabilities fixed at 0) are
        kept as they are. Default: none; a model over this family then refuses
        ``accelerate="squarem"``."""
        del params
        raise NotImplementedError(f"{type(self).__name__} has no unconstrained parameterisation.")

    def constrain(self, values) -> Any:
        """Inverse of :meth:`unconstrain` (parameters from unconstrained values)."""
        del values
        raise NotImplementedError(f"{type(self).__name__} has no unconstrained parameterisation.")

    def to_layout(self, params) -> dict[str, Any]:
        """The parameters as users see them (numpy arrays by name)."""
        return {name: jax.device_get(value) for name, value in params._asdict().items()}

    def from_layout(self, dtype, **arrays) -> Any:
        """Inverse of :meth:`to_layout`."""
        raise NotImplementedError(f"{type(self).__name__} has no from_layout.")


class Seeding(Protocol):
    """The part of a model's :meth:`Model.init` that does not depend on all of the
    model, compiled by the engine as a program of its own, so that models with equal
    seedings (a Gaussian mixture of each covariance type, with the k-means init) trace
    and compile it once.

    A seeding is a frozen dataclass: hashable and a static argument of compiled code,
    like a model. Its compared fields must decide :meth:`seed` entirely; a field that
    only serves the computation (the family whose ``seeding_points`` it calls) is
    declared with ``compare=False`` and stands for the compared ``seeding_key``.
    """

    def seed(self, key: PRNGKey, chunks: Chunks, hyper) -> Any:
        """One restart's seeds (a pytree of arrays) from the chunked data and the
        model's ``hyper``; the engine vmaps this over restarts with the fit's keys."""
        ...


class Model(Protocol):
    """A latent-variable model run by :func:`jaxem.fit`.

    A model is a frozen dataclass: hashable, a static argument of compiled code,
    and two equal models share one program. Fields that only change numbers
    (hyperparameters, and sizes that are padded such as a mixture's active
    ``n_components``) are declared with ``compare=False`` and reach compiled code
    as arrays through :meth:`hyper`.
    """

    #: Methods ``f(params, x) -> arrays with a leading row axis`` that
    #: :func:`jaxem.engine.evaluate` may run chunk by chunk on fitted parameters.
    outputs: ClassVar[tuple[str, ...]] = ("log_prob",)
    #: Methods ``f(params, hyper) -> arrays`` of the parameters alone (no data), such as
    #: LDA's topics' part of its bound, that :func:`jaxem.engine.parameter_outputs`
    #: runs for every restart in one program. Optional (default: none).
    parameter_outputs: ClassVar[tuple[str, ...]] = ()

    # -- required --------------------------------------------------------------------------
    def hyper(self, dtype) -> Any:
        """Numeric hyperparameters as a pytree of arrays (traced: no recompile)."""
        ...

    def init(self, key: PRNGKey, chunks: Chunks, hyper) -> Any:
        """Initial parameters of ONE restart from the chunked data. Work over rows
        should go chunk by chunk (``_iterate.chunked_sum``) so memory stays
        O(chunk); the engine vmaps this over restarts with the keys of the fit."""
        ...

    def e_step(self, params, x, weights: Array, hyper) -> tuple[Any, Array]:
        """``(stats, log_likelihood)`` of one chunk, both SUMS over rows weighted by
        ``weights``. Additive: ``e_step(A ∪ B) == e_step(A) + e_step(B)``
        (or :meth:`combine_stats`)."""
        ...

    def m_step(self, stats, params, hyper) -> Any:
        """New parameters from summed statistics; never sees data."""
        ...

    def log_prob(self, params, x) -> Array:
        """Per-row (per-sequence) log-likelihood, shape ``(n,)``."""
        ...

    def n_parameters(self, n_features: int) -> int:
        """Free parameters, for BIC and AIC."""
        ...

    # -- optional, with defaults -------------------------------------------------------------
    def seeding(self) -> Seeding | None:
        """The data-dependent first part of :meth:`init` as a :class:`Seeding`, or None
        (default): :meth:`init` then runs whole inside the fit's program. When not None,
        ``init(key, chunks, hyper)`` must equal
        ``init_from_seeds(seeding().seed(key, chunks, hyper), key, chunks, hyper)``, and
        the engine's host-side fit runs the seeding as a program of its own, which equal
        seedings share."""
        return None

    def init_from_seeds(self, seeds, key: PRNGKey, chunks: Chunks, hyper) -> Any:
        """One restart's initial parameters from its seeds (:meth:`seeding`'s output).
        Required when :meth:`seeding` is not None."""
        del seeds, key, chunks, hyper
        raise NotImplementedError(f"{type(self).__name__} has no seeding.")

    def padded_rows(self, n_rows: int) -> int:
        """Rows (data units) the engine pads ``n_rows`` to, so that data sets of nearby
        sizes share one compiled program; padding has weight 0."""
        return padded_rows(n_rows)

    def row_width(self, x) -> int:
        """Per-row, per-restart size of the E-step's work (sizes the chunks)."""
        return 1

    def combine_stats(self, a, b):
        """Merge statistics of two chunks; associative and commutative."""
        return ops.tree_add(a, b)

    def scale_stats(self, stats, factor):
        """Statistics with every row's weight multiplied by ``factor`` (online EM's
        step mixes statistics with it). Default: every leaf times ``factor``."""
        return jax.tree.map(lambda leaf: leaf * factor, stats)

    def log_prior(self, params, hyper) -> Array:
        """Log prior density of ``params`` (one restart), up to a constant, for MAP EM:
        the engine monitors ``(log-likelihood + log_prior) / total weight``, the log
        posterior per row, so the convergence test and the reported value are about it.
        Default: 0 (maximum likelihood)."""
        del params, hyper
        return jnp.zeros(())

    def objective(self, stats, log_likelihood, new_params, hyper, total_weight) -> Array:
        """The value the engine monitors, traces, tests for convergence (``tol``) and
        picks the best restart by, for an iteration whose E-step gave ``stats`` and
        ``log_likelihood`` (summed over rows of total weight ``total_weight``, plus
        :meth:`log_prior` of the E-step's parameters) and
        whose M-step gave ``new_params``. Default: the mean per-row log-likelihood
        (EM, as scikit-learn's ``GaussianMixture``). A variational model returns its
        lower bound, which scikit-learn evaluates with the new parameters and
        monitors as a total (``BayesianGaussianMixture``)."""
        del stats, new_params, hyper
        return log_likelihood / total_weight

    def converged(self, old_params, new_params, log_likelihood, previous, tol) -> Array:
        """Convergence test; default ``|Δ mean log-likelihood| < tol`` (scikit-learn)."""
        del old_params, new_params
        return jnp.abs(log_likelihood - previous) < tol

    def stochastic(self) -> bool:
        """Whether the E-step draws random numbers (stochastic EM).

        If True the engine calls :meth:`e_step_with_keys` with one key per row, drawn
        from the fit's key per restart, iteration and row (the row's global index, so
        the draws do not depend on chunking or devices); it runs every restart for
        ``max_iter`` iterations (the objective is noisy: no tolerance test) and
        returns the M-step of the statistics averaged over the second half of the
        iterations, with the mean log-likelihood of those parameters (one more
        :meth:`e_step`). :meth:`e_step` must then give the expectation of the drawn
        statistics (the soft E-step) and the log-likelihood. Default False.
        """
        return False

    def e_step_with_keys(self, keys, params, x, weights: Array, hyper) -> tuple[Any, Array]:
        """:meth:`e_step` of a :meth:`stochastic` model, drawing row ``i``'s random
        numbers from ``keys[i]`` (``keys`` has shape ``(n,)``). Default: :meth:`e_step`,
        the keys unused."""
        del keys
        return self.e_step(params, x, weights, hyper)

    def is_finite(self, params) -> Array:
        """Whether ``params`` (one restart) are usable; default: every leaf finite."""
        return ops.tree_all_finite(params)

    def unconstrain(self, params) -> Any:
        """One restart's parameters as a pytree of arrays free of constraints, so
        that any affine combination of such pytrees maps back to valid parameters by
        :meth:`constrain`; ``-inf`` entries (probabilities fixed at 0) are kept.
        The engine's SQUAREM acceleration (``accelerate="squarem"``) extrapolates
        there. Default: none, and the engine refuses ``accelerate="squarem"`` for
        the model."""
        del params
        raise NotImplementedError(f"{type(self).__name__} has no unconstrained parameterisation.")

    def constrain(self, values) -> Any:
        """Inverse of :meth:`unconstrain`."""
        del values
        raise NotImplementedError(f"{type(self).__name__} has no unconstrained parameterisation.")

    def has_padding(self) -> bool:
        """Whether some components are padding (see :meth:`trim`)."""
        return False

    def trim(self, params):
        """One restart's parameters without padded (masked) components; default
        unchanged. Host-side, on numpy arrays: the result's shapes depend on fields
        that are not static."""
        return params

    def pad(self, params):
        """Inverse of :meth:`trim`: trimmed parameters padded back to the model's
        array sizes (padding inert), so one program serves every active size."""
        return params
