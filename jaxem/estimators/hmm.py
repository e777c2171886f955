"""hmmlearn drop-ins: :class:`GaussianHMM`, :class:`CategoricalHMM`, :class:`PoissonHMM`.

Constructor parameters, defaults, attributes and methods follow hmmlearn 0.3.3, so
swapping the import is the migration. Differences: ``n_init`` runs several
restarts at once on the device and keeps the best (hmmlearn has one); the EM loop
is one compiled program. ``"log"`` (the default) and ``"scaling"`` both run jaxem's
default forward-backward, in probability space with per-step scaling and every
magnitude kept in log space (``algorithm="scaled"`` of :class:`jaxem.HMM`), which
matches hmmlearn's log-space results to rounding or refuses a sequence beyond its
range (zero transitions meeting emission spreads of hundreds of nats): ``fit``,
``score`` and the posteriors with ``"log"`` then run again with the log-space
recursions. ``"scaling"`` also fails where
hmmlearn's scaled forward pass underflows (a step with every emission density below
float64's smallest number), with hmmlearn's ValueError, so code written against that
behaviour keeps it; use ``"log"`` to fit such data. ``implementation`` also accepts
``"scan"`` (the log-space recursions, exact even where zero transitions meet emission
spreads beyond ~700 nats, which ``"scaled"`` is not), ``"associative"`` (a
parallel-in-time forward-backward for accelerators) and ``"blocked"`` (a two-level
blocked forward-backward).

Precision follows the input, as in the mixtures: float32 observations are computed
in float32, float64, integer symbols and counts in float64, whatever JAX's global
64-bit flag says (it is set for each call only). Fitted attributes are float64, as
hmmlearn's. On a 2-core CPU a diagonal GaussianHMM ran no faster in float32
(``benchmarks/RESULTS.md``); float32 is meant for accelerators.

Convergence is hmmlearn's: stop when the increase of the total log-likelihood
(summed over sequences) is below ``tol``. Sequences are packed several to a row
(:func:`jaxem.pack_sequences`), so very unequal lengths cost about their total
number of steps; a packed row's log-likelihood is the sum of its sequences'. The
engine tracks the mean per row, so the estimators hand it ``tol / n_rows``;
``restarts_`` reports the mean per sequence, as without packing.

Like hmmlearn, ``fit`` reports through :mod:`logging` (logger
``jaxem.estimators.hmm``, hmmlearn's messages) when ``init_params`` overwrites an
attribute you set and when the model has more free scalars than data values; it
refuses more states than samples with a ``ValueError``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
from collections import deque
from numbers import Real
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.utils._param_validation import Interval, validate_parameter_constraints

from jaxem import engine
from jaxem.contract import check_assignment
from jaxem.estimators import _array_api, _validation
from jaxem.estimators._base import EMEstimator, in_input_precision
from jaxem.estimators._mixture import _row_log_prior
from jaxem.families.categorical import Categorical
from jaxem.families.gaussian import COVARIANCE_TYPES, Gaussian, GaussianParams
from jaxem.families.gaussian_mixture import GMM, hmmlearn_covariance_prior
from jaxem.families.low_rank_gaussian import (
    LowRankGaussian,
    LowRankGaussianParams,
    check_rank,
    low_rank_gaussian,
)
from jaxem.families.multinomial import Multinomial
from jaxem.families.poisson import Poisson
from jaxem.models.hmm import HMM, HMMParams, pack_sequences, pad_sequences

__all__ = [
    "GaussianHMM",
    "CategoricalHMM",
    "PoissonHMM",
    "MultinomialHMM",
    "GMMHMM",
    "ConvergenceMonitor",
]

#: hmmlearn reports its initialisation notices through ``logging`` (logger
#: ``hmmlearn.base``), not ``warnings``; jaxem does the same on this module's logger.
_log = logging.getLogger(__name__)

IMPLEMENTATIONS = ("log", "scaling", "scan", "associative", "blocked")

_LOW_RANK_COVARS = (
    "covars_ cannot be set for covariance_type='lowrank': it is W Wᵀ + Ψ, formed from "
    "loadings_ (n_components, n_features, covariance_rank) and noise_variances_ "
    "(n_components, n_features). Set those two, with 'c' out of init_params."
)
DECODER_ALGORITHMS = ("viterbi", "map")


class ConvergenceMonitor:
    """hmmlearn's ``ConvergenceMonitor``, filled after the fit.

    Attributes
    ----------
    history : deque of the total log-likelihood (summed over sequences) per iteration
    iter : number of iterations run
    converged : ``iter == n_iter`` or the last increase is below ``tol`` (hmmlearn)
    """

    def __init__(self, tol, n_iter, verbose):
        self.tol = tol
        self.n_iter = n_iter
        self.verbose = verbose
        self.history = deque()
        self.iter = 0

    def __repr__(self):
        return (
            f"ConvergenceMonitor(history={list(self.history)}, iter={self.iter}, "
            f"n_iter={self.n_iter}, tol={self.tol}, verbose={self.verbose})"
        )

    @property
    def converged(self):
        return self.iter == self.n_iter or (
            len(self.history) >= 2 and self.history[-1] - self.history[-2] < self.tol
        )


class _BaseHMM(EMEstimator):
    """Shared fit / inference plumbing; subclasses describe their emissions.

    On the estimators' base for the engine call and the restarts' bookkeeping
    (``restarts_``, ``best_restart_``); the input is sequences, so validation and
    packing are hmmlearn's (``X``, ``lengths``) and :func:`jaxem.pack_sequences`.
    """

    #: Pack sequences several to a row (False: one per row, padded; private, for the
    #: tests that compare both).
    _pack_sequences = True

    #: hmmlearn letter -> attribute name, for the emission parameters.
    _emission_letters: dict = {}

    def __init__(
        self,
        n_components=1,
        startprob_prior=1.0,
        transmat_prior=1.0,
        algorithm="viterbi",
        random_state=None,
        n_iter=10,
        tol=1e-2,
        verbose=False,
        params="st",
        init_params="st",
        implementation="log",
        n_init=1,
        mesh=None,
        step_decay=0.6,
        assignment="soft",
        accelerate=None,
    ):
        self.n_components = n_components
        self.startprob_prior = startprob_prior
        self.transmat_prior = transmat_prior
        self.algorithm = algorithm
        self.random_state = random_state
        self.n_iter = n_iter
        self.tol = tol
        self.verbose = verbose
        self.params = params
        self.init_params = init_params
        self.implementation = implementation
        self.n_init = n_init
        self.mesh = mesh
        self.assignment = assignment
        self.step_decay = step_decay
        self.accelerate = accelerate

    def __getattr__(self, name):
        """Before any fit, ``monitor_`` is a fresh monitor, as hmmlearn's (set in its
        constructor); it is not stored, so the estimator does not look fitted."""
        if name == "monitor_":
            return ConvergenceMonitor(self.tol, self.n_iter, self.verbose)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # -- to be provided by subclasses ----------------------------------------------------------
    def _check_X(self, X, reset):  # -> numpy array
        raise NotImplementedError

    def _family(self):
        raise NotImplementedError

    def _emission_params(self, family, dtype):  # attributes -> family params
        raise NotImplementedError

    def _set_emission_attributes(self, family, emissions):
        raise NotImplementedError

    def _n_fit_scalars_per_emission(self):  # emission letter -> free scalars
        raise NotImplementedError

    # -- fitting ----------------------------------------------------------------------------------
    @in_input_precision
    def fit(self, X, lengths=None, y=None, *, state_prior=None):
        """Estimate the parameters by Baum-Welch EM.

        Parameters
        ----------
        X : array-like (n_samples, n_features)
            All sequences concatenated.
        lengths : array-like of int, optional
            Length of every sequence; they must sum to ``n_samples``.
        y : array-like of int of shape (n_samples,), optional
            jaxem extension (hmmlearn's ``fit`` has none; None fits as hmmlearn):
            the state of every sample where it is known, -1 where it is not. Known
            steps keep their state with probability one in every E-step
            (forward-backward and Viterbi); the monitored log-likelihood is that of
            the observations and the known states.
        state_prior : array-like of shape (n_samples, n_components), optional
            jaxem extension, the general form of ``y``: prior probabilities of the
            states at every sample (rows non-negative, summing to 1), multiplied
            into the emission probabilities.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            If ``X`` has fewer samples than ``n_components`` states (fit fewer states
            or give more data); if ``y`` or ``state_prior`` has the wrong length or
            shape, a state outside ``[-1, n_components)``, a non-integer dtype, or
            prior rows that are negative or do not sum to 1; besides invalid input
            or hyperparameters.
        """
        self.__dict__.pop("_online_state", None)  # a new fit ends any online one
        self._check_hyperparameters()
        X = self._check_X(X, reset=True)
        _validation.check_n_samples(X.shape[0], int(self.n_components))
        dtype = self._dtype(X)
        self._fit_offset = self._data_offset(X)
        observations, mask, index = self._sequence_rows(X, lengths, dtype)
        # The engine's mean is per row: a packed row's log-likelihood sums its sequences'.
        n_rows = mask.shape[0]
        model = self._model(self.params)
        self._log_initialisation_notices(X)
        # numpy, not jnp: an eager conversion compiles a small program in each process.
        data = (np.asarray(observations, self._obs_dtype(dtype)), np.asarray(mask))
        data += self._known_steps(y, state_prior, index, mask.shape, X.shape[0], dtype)
        hyper = model.hyper(dtype)
        n_init = int(self.n_init)
        key = _validation.random_key(self.random_state)
        init_key, fit_key = jax.random.split(key)
        initial = self._initial_params(model, init_key, data, hyper, n_init, dtype)

        def fit_with(model):
            return self._engine_fit(
                model,
                data,
                key=fit_key,
                n_restarts=n_init,
                max_iter=int(self.n_iter),
                tol=float(self.tol) / n_rows,
                init_params=initial,
                hyper=hyper,
            )

        try:
            result = fit_with(model)
        except engine.AllRestartsFailed as failure:
            if self.implementation == "scaling":
                raise ValueError(  # hmmlearn's message: its scaling pass underflows likewise
                    "forward pass failed with underflow; consider using "
                    f"implementation='log' instead ({failure})"
                ) from failure
            if self.implementation != "log":
                raise
            # The scaled recursions refuse sequences beyond their range (zero
            # transitions meeting emission spreads of hundreds of nats), which
            # hmmlearn's log-space ones fit: so do the log-space ones here.
            result = fit_with(dataclasses.replace(model, algorithm="scan"))
        self._set_params(model.family, result.params)
        trace = np.asarray(result.restarts.trace, np.float64)[result.best_restart]
        history = trace[: result.n_iter] * n_rows
        # restarts_ keeps its unit whatever the packing: the mean per sequence.
        n_sequences = int(np.count_nonzero(mask[:, 0]) + np.count_nonzero(mask == 2))
        self.restarts_ = self.restarts_._replace(
            log_likelihood=self.restarts_.log_likelihood * (n_rows / n_sequences),
            trace=self.restarts_.trace * (n_rows / n_sequences),
        )
        # A monitor assigned before the fit (hmmlearn's tests assign their own
        # subclass of hmmlearn's) receives the history; otherwise a new one.
        monitor = vars(self).get("monitor_")
        if monitor is None or isinstance(monitor, ConvergenceMonitor):
            monitor = ConvergenceMonitor(self.tol, self.n_iter, self.verbose)
        monitor.history = deque(history.tolist())
        monitor.iter = int(result.n_iter)
        self.monitor_ = monitor
        self.n_init_results_ = self.restarts_  # the name of earlier releases
        if self.verbose:
            previous = np.nan
            for iteration, value in enumerate(history, 1):
                print(
                    f"{iteration:>10d} {value:>16.8f} {value - previous:>+16.8f}", file=sys.stderr
                )
                previous = value
        return self

    @in_input_precision
    def partial_fit(self, X, lengths=None):
        """One step of online EM on the batch of sequences ``X`` (jaxem extension).

        Stepwise EM (Cappé and Moulines 2009), batched over ``n_init`` restarts: every
        restart keeps running per-sequence Baum-Welch statistics, moved towards the
        batch's by ``(t + 2) ** -step_decay`` at step ``t``, and its parameters are
        their M-step (``params`` letters respected). The first call initialises the
        restarts on its batch as :meth:`fit` does (``init_params`` letters
        respected); after :meth:`fit`, the fitted parameters are the start. The
        attributes are those of the restart with the highest log-likelihood on the
        latest batch; ``n_iter_`` counts the steps. The running statistics are per
        sequence, so the priors weigh as against one average sequence (they pull
        harder than in :meth:`fit`; the default priors of ``startprob_``,
        ``transmat_`` and the emissions other than GaussianHMM's ``covars_prior``
        add nothing). They are not saved by ``save``.

        Parameters
        ----------
        X : array-like (n_samples, n_features)
            The batch's sequences concatenated (the first batch needs at least
            ``n_components`` samples).
        lengths : array-like of int, optional
            Length of every sequence of the batch; they must sum to ``n_samples``.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            If ``step_decay`` is not in (0, 1], if a later batch does not match the
            first (features, symbols), or if every restart's step went non-finite.

        Examples
        --------
        >>> import numpy as np
        >>> import jaxem
        >>> rng = np.random.default_rng(0)
        >>> X = np.concatenate([rng.normal(6 * (i % 2), 1, (50, 1)) for i in range(8)])
        >>> model = jaxem.GaussianHMM(n_components=2, random_state=0)
        >>> for batch in (X[:200], X[200:]):  # two sequences of 100 steps per batch
        ...     model = model.partial_fit(batch, lengths=[100, 100])
        >>> np.sort(model.means_[:, 0]).round(0), model.n_iter_
        (array([0., 6.]), 2)
        """
        self._refuse_online_acceleration()
        self._check_hyperparameters()
        self._check_online_support()
        validate_parameter_constraints(
            {"step_decay": [Interval(Real, 0.0, 1.0, closed="right")]},
            {"step_decay": self.step_decay},
            caller_name=type(self).__name__,
        )
        state = getattr(self, "_online_state", None)
        # Fitted (by fit, partial_fit or a loaded estimator): continue from the attributes.
        fitted = "monitor_" in vars(self) or hasattr(self, "n_iter_")
        first = state is None and not fitted
        X = self._check_X(X, reset=first)
        if first:
            _validation.check_n_samples(X.shape[0], int(self.n_components))
            self._fit_offset = self._data_offset(X)
        dtype = self._dtype(X)
        # Online EM keeps one sequence per row: its running statistics and step sizes
        # are per sequence.
        observations, mask = pad_sequences(self._centred_rows(X), lengths, dtype=dtype)
        data = (np.asarray(observations, self._obs_dtype(dtype)), np.asarray(mask))
        if state is not None:
            model, online, start = state.model, state.online, None
        else:
            online, model = None, self._model(self.params)
            if first:
                self._log_initialisation_notices(X)
                key = jax.random.split(_validation.random_key(self.random_state))[0]
                start = self._initial_params(
                    model, key, data, model.hyper(dtype), int(self.n_init), dtype
                )
            else:
                self._check_shapes()
                fitted_params = HMMParams(
                    np.asarray(self.startprob_, dtype),
                    np.asarray(self.transmat_, dtype),
                    self._emission_params(model.family, dtype),
                )
                start = jax.tree.map(lambda leaf: np.asarray(leaf)[None], fitted_params)

        def step(model):
            return engine.online_step(
                model, online, data, init_params=start, step_decay=float(self.step_decay)
            )

        online_next, log_likelihood = step(model)
        if not np.any(np.isfinite(log_likelihood)) and model.algorithm == "scaled":
            if self.implementation == "log":
                # As fit: what the scaled recursions refuse, the log-space ones run.
                model = dataclasses.replace(model, algorithm="scan")
                online_next, log_likelihood = step(model)
        if not np.any(np.isfinite(log_likelihood)):
            raise ValueError(
                "Every restart's online EM step gave non-finite values; scale the "
                "features, use larger batches, or pass float64 input."
            )
        best = int(np.argmax(log_likelihood))
        self._online_state = _OnlineFit(model, online_next)
        self._set_params(
            model.family, jax.tree.map(lambda leaf: np.asarray(leaf)[best], online_next.params)
        )
        self.n_iter_ = int(online_next.n_steps)
        self.best_restart_ = best
        return self

    def _check_online_support(self):
        """Raise ``ValueError`` where :meth:`partial_fit` cannot run (none by default)."""

    def _log_initialisation_notices(self, X):
        """hmmlearn's ``_init`` notices, same messages, same order, through ``logging``.

        An attribute set by hand whose letter is in ``init_params`` is overwritten by
        the initialisation (the letter must be left out to keep it), and a model with
        more free scalars than data values in ``params`` cannot be fitted sensibly.
        """
        letters = {"s": "startprob_", "t": "transmat_", **self._emission_letters}

        def notice(letter):
            if letter in self.init_params and hasattr(self, letters[letter]):
                _log.warning(
                    "Even though the %r attribute is set, it will be overwritten during "
                    "initialization because 'init_params' contains %r",
                    letters[letter],
                    letter,
                )

        notice("s")
        notice("t")
        counts = self._n_fit_scalars_per_param()
        n_fit_scalars = sum(counts.get(letter, 0) for letter in self.params)
        if X.size < n_fit_scalars:
            _log.warning(
                "Fitting a model with %d free scalar parameters with only %d data points "
                "will result in a degenerate solution.",
                n_fit_scalars,
                X.size,
            )
        for letter in self._emission_letters:
            notice(letter)

    def _check_hyperparameters(self):
        if not isinstance(self.n_components, (int, np.integer)) or self.n_components < 1:
            raise ValueError(f"n_components must be a positive int, got {self.n_components!r}.")
        if not isinstance(self.n_init, (int, np.integer)) or self.n_init < 1:
            raise ValueError(f"n_init must be a positive int, got {self.n_init!r}.")
        if self.implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"implementation must be one of {IMPLEMENTATIONS}, got {self.implementation!r}."
            )
        if self.algorithm not in DECODER_ALGORITHMS:
            raise ValueError(f"Unknown decoder {self.algorithm!r}; use 'viterbi' or 'map'.")
        check_assignment(self.assignment)
        engine.check_accelerate(self.accelerate)
        if getattr(self, "missing", "error") not in ("error", "em"):
            raise ValueError(f"missing must be 'error' or 'em', got {self.missing!r}.")

    def _dtype(self, X):
        source = X.dtype if np.issubdtype(X.dtype, np.floating) else np.float64
        return _validation.compute_dtype(source)

    def _obs_dtype(self, dtype):
        return dtype

    def _model(self, update):
        return HMM(
            family=self._family(),
            n_states=int(self.n_components),
            # hmmlearn's two names run jaxem's default; the others name an algorithm.
            algorithm=(
                "scaled" if self.implementation in ("log", "scaling") else self.implementation
            ),
            update=update,
            startprob_prior=self.startprob_prior,
            transmat_prior=self.transmat_prior,
            fail_on_underflow=self.implementation == "scaling",
            assignment=self.assignment,
        )

    def _initial_params(self, model, key, data, hyper, n_init, dtype):
        """Model init for letters in ``init_params`` (or unset attributes), user values else."""

        def user(letter, name):
            return letter not in self.init_params and hasattr(self, name)

        letters = {"s": "startprob_", "t": "transmat_", **self._emission_letters}
        if all(user(letter, name) for letter, name in letters.items()):
            # Everything user-set: no need to compile the model's init at all.
            shapes = engine.initial_shapes(model, data, n_restarts=n_init, hyper=hyper)
            params = jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), shapes)
        else:
            params = engine.initialise(
                model, data, key=key, n_restarts=n_init, hyper=hyper, mesh=self.mesh
            )

        def broadcast(value, like):
            return np.broadcast_to(np.asarray(value, like.dtype), like.shape)

        n = self.n_components
        startprob, transmat = params.startprob, params.transmat
        if user("s", "startprob_"):
            if np.shape(self.startprob_) != (n,):
                raise ValueError(
                    f"startprob_ must have shape ({n},), got {np.shape(self.startprob_)}."
                )
            startprob = broadcast(self.startprob_, startprob)
        if user("t", "transmat_"):
            if np.shape(self.transmat_) != (n, n):
                raise ValueError(
                    f"transmat_ must have shape ({n}, {n}), got {np.shape(self.transmat_)}."
                )
            transmat = broadcast(self.transmat_, transmat)
        emissions = params.emissions
        letters = self._emission_letters
        if any(user(letter, name) for letter, name in letters.items()):
            mine = self._emission_params(model.family, dtype)
            values = list(emissions)
            for letter, name in letters.items():
                if user(letter, name):
                    for index in self._emission_fields()[letter]:
                        values[index] = broadcast(mine[index], values[index])
            emissions = type(emissions)(*values)
        return HMMParams(startprob, transmat, emissions)

    def _emission_fields(self) -> dict:
        """Emission parameter letter -> indices of the family's parameter fields it
        sets (by default the letters' order: one field each)."""
        return {letter: (index,) for index, letter in enumerate(self._emission_letters)}

    def _set_params(self, family, params):
        self.startprob_ = np.asarray(params.startprob, np.float64)
        self.transmat_ = np.asarray(params.transmat, np.float64)
        self._set_emission_attributes(family, params.emissions)

    # -- model selection --------------------------------------------------------------------------
    def _n_fit_scalars_per_param(self):
        """Free scalars per parameter letter (hmmlearn's ``_get_n_fit_scalars_per_param``).

        Every row of ``startprob_`` and ``transmat_`` sums to 1, so each loses one.
        """
        n = int(self.n_components)
        return {"s": n - 1, "t": n * (n - 1), **self._n_fit_scalars_per_emission()}

    def aic(self, X, lengths=None):
        """Akaike information criterion of the model on ``X`` (lower is better).

        ``-2 * score(X, lengths) + 2 * n_parameters``, as hmmlearn: the free scalars
        of every parameter group count, whether or not ``params`` lets a fit update
        them.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            All sequences concatenated.
        lengths : array-like of int, optional
            Length of every sequence; they must sum to ``n_samples``.

        Returns
        -------
        aic : float
        """
        log_likelihood = self.score(X, lengths=lengths)  # validates X and the attributes
        n_parameters = sum(self._n_fit_scalars_per_param().values())
        return -2 * log_likelihood + 2 * n_parameters

    def bic(self, X, lengths=None):
        """Bayesian information criterion of the model on ``X`` (lower is better).

        ``-2 * score(X, lengths) + n_parameters * log(n_samples)``, as hmmlearn
        (parameters counted as in :meth:`aic`).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            All sequences concatenated.
        lengths : array-like of int, optional
            Length of every sequence; they must sum to ``n_samples``.

        Returns
        -------
        bic : float
        """
        log_likelihood = self.score(X, lengths=lengths)  # validates X and the attributes
        n_parameters = sum(self._n_fit_scalars_per_param().values())
        return -2 * log_likelihood + n_parameters * math.log(len(X))

    # -- inference --------------------------------------------------------------------------------
    def _sequence_rows(self, X, lengths, dtype):
        """``(observations, mask, index)`` of the centred ``X``: sequences packed
        (:func:`jaxem.pack_sequences`) or, with ``_pack_sequences`` off, padded one per
        row; ``values[index]`` is per sample in the input's order."""
        if self._pack_sequences:
            return pack_sequences(self._centred_rows(X), lengths, dtype=dtype)
        observations, mask = pad_sequences(self._centred_rows(X), lengths, dtype=dtype)
        return observations, mask, np.nonzero(mask > 0)

    def _known_steps(self, y, state_prior, index, shape, n_samples, dtype) -> tuple:
        """``(log_prior,)``, the ``(rows, L, K)`` log prior over the states from ``y`` or
        ``state_prior`` placed as the observations (``index``, ``shape`` ``(rows, L)``;
        the data's third leaf), or ``()`` without either."""
        log_prior = _row_log_prior(
            y, state_prior, n_samples, int(self.n_components), prior_name="state_prior"
        )
        if log_prior is None:
            return ()
        rows = np.zeros(tuple(shape) + log_prior.shape[1:], log_prior.dtype)
        rows[index] = log_prior
        return (np.asarray(rows, dtype),)

    def _fitted_model_data(self, X, lengths, y=None, state_prior=None):
        """``(model, params, data, index)`` for evaluating the fitted HMM on ``X``;
        ``values[index]`` is per sample in the input's order."""
        _validation.check_fitted(
            self, ["startprob_", "transmat_", *self._emission_letters.values()]
        )
        self._check_shapes()
        X = self._check_X(X, reset=False)
        dtype = self._dtype(X)
        observations, mask, index = self._sequence_rows(X, lengths, dtype)
        model = self._model("")
        params = HMMParams(
            np.asarray(self.startprob_, dtype),
            np.asarray(self.transmat_, dtype),
            self._emission_params(model.family, dtype),
        )
        obs = np.asarray(observations, self._obs_dtype(dtype))
        data = (obs, np.asarray(mask)) + self._known_steps(
            y, state_prior, index, mask.shape, X.shape[0], dtype
        )
        return model, params, data, index

    def _evaluate_sequences(self, model, params, data, output):
        """:func:`jaxem.engine.evaluate` of ``"posterior"`` or ``"log_prob"``.

        With ``implementation="log"``, data the scaled recursions refuse (a sequence
        at ``-inf``) is evaluated again in log space, as hmmlearn's ``"log"`` scores it.
        """
        values = engine.evaluate(model, params, data, output)
        log_likelihood = values if output == "log_prob" else values.log_likelihood
        if self.implementation == "log" and not np.all(np.isfinite(log_likelihood)):
            values = engine.evaluate(
                dataclasses.replace(model, algorithm="scan"), params, data, output
            )
        return values

    @in_input_precision
    def score_samples(self, X, lengths=None, *, y=None, state_prior=None):
        """Total log-likelihood and the posteriors ``(n_samples, n_components)`` of the
        states; ``y`` and ``state_prior`` (jaxem extension): states known at some
        samples, as in :meth:`fit`."""
        model, params, data, index = self._fitted_model_data(X, lengths, y, state_prior)
        posterior = self._evaluate_sequences(model, params, data, "posterior")
        log_likelihood = float(np.sum(np.asarray(posterior.log_likelihood, np.float64)))
        return log_likelihood, np.asarray(posterior.smoothed, np.float64)[index]

    @in_input_precision
    def score(self, X, lengths=None):
        """Log-likelihood of ``X`` under the model, summed over sequences."""
        model, params, data, _ = self._fitted_model_data(X, lengths)
        log_likelihood = self._evaluate_sequences(model, params, data, "log_prob")
        return float(np.sum(np.asarray(log_likelihood, np.float64)))

    @in_input_precision
    def predict_proba(self, X, lengths=None, *, y=None, state_prior=None):
        """Posterior probability of every state at every sample (``y``,
        ``state_prior``: states known at some samples, as in :meth:`fit`)."""
        return self.score_samples(X, lengths, y=y, state_prior=state_prior)[1]

    @in_input_precision
    def decode(self, X, lengths=None, algorithm=None, *, y=None, state_prior=None):
        """Most likely states: ``(log_prob, state_sequence)`` as hmmlearn.

        ``"viterbi"`` gives the joint log-probability of the best paths, summed over
        sequences; ``"map"`` the per-sample argmax of the posteriors with hmmlearn's
        ``log_prob`` (the sum of the maximal posterior probabilities). ``y`` and
        ``state_prior`` (jaxem extension): states known at some samples, as in
        :meth:`fit`; known samples keep their state.
        """
        algorithm = algorithm or self.algorithm
        if algorithm not in DECODER_ALGORITHMS:
            raise ValueError(f"Unknown decoder {algorithm!r}; use 'viterbi' or 'map'.")
        if algorithm == "map":
            _, posteriors = self.score_samples(X, lengths, y=y, state_prior=state_prior)
            return float(posteriors.max(axis=1).sum()), posteriors.argmax(axis=1)
        model, params, data, index = self._fitted_model_data(X, lengths, y, state_prior)
        states, log_prob = engine.evaluate(model, params, data, "viterbi")
        return float(np.sum(np.asarray(log_prob, np.float64))), np.asarray(states)[index]

    @in_input_precision
    def predict(self, X, lengths=None, *, y=None, state_prior=None):
        """Most likely state of every sample (by ``algorithm``; ``y``,
        ``state_prior``: states known at some samples, as in :meth:`fit`)."""
        return self.decode(X, lengths, y=y, state_prior=state_prior)[1]

    @_array_api.in_input_namespace
    def sample(self, n_samples=1, random_state=None, currstate=None):
        """Draw ``n_samples`` steps: ``(X, state_sequence)``.

        ``currstate`` starts the chain from that state instead of ``startprob_``.
        """
        _validation.check_fitted(
            self, ["startprob_", "transmat_", *self._emission_letters.values()]
        )
        self._check_shapes()
        with _validation.precision(np.float64):  # the attributes are float64
            return self._sample(n_samples, random_state, currstate)

    def _sample(self, n_samples, random_state, currstate):
        dtype = np.dtype(np.float64)
        model = self._sampling_model()
        startprob = np.asarray(self.startprob_, np.float64)
        if currstate is not None:
            startprob = np.eye(self.n_components)[int(currstate)]
        params = HMMParams(
            np.asarray(startprob, dtype),
            np.asarray(self.transmat_, dtype),
            self._emission_params(model.family, dtype),
        )
        key = _validation.random_key(self.random_state if random_state is None else random_state)
        x, states = engine.sample(model, key, params, int(n_samples))
        return self._sample_output(np.asarray(x)), np.asarray(states)

    def _sampling_model(self):
        """The model whose ``sample`` draws the steps (checks what sampling needs)."""
        return self._model("")

    def _sample_output(self, x):
        return x

    def _data_offset(self, X):
        """Offset subtracted from the observations before fitting; None: none."""
        return None

    def _centred_rows(self, X):
        """``X`` minus the fit's offset (computed in float64, in ``X``'s dtype)."""
        offset = getattr(self, "_fit_offset", None)
        if offset is None:
            return X
        return np.asarray(np.asarray(X, np.float64) - offset, X.dtype)

    def _check_shapes(self):
        n = self.n_components
        startprob = np.asarray(self.startprob_)
        transmat = np.asarray(self.transmat_)
        if startprob.shape != (n,):
            raise ValueError(f"startprob_ must have shape ({n},), got {startprob.shape}.")
        if transmat.shape != (n, n):
            raise ValueError(f"transmat_ must have shape ({n}, {n}), got {transmat.shape}.")
        if not np.allclose(startprob.sum(), 1.0):
            raise ValueError(f"startprob_ must sum to 1 (got {startprob.sum()}).")
        sums = transmat.sum(axis=1)
        if not np.all(np.isclose(sums, 1.0) | (sums == 0)):
            raise ValueError(f"transmat_ rows must sum to 1 (got {sums}).")


class GaussianHMM(_BaseHMM):
    """Hidden Markov model with Gaussian emissions (hmmlearn's ``GaussianHMM``).

    Parameters
    ----------
    n_components : int
        Number of states.
    covariance_type : {"diag", "spherical", "full", "tied", "lowrank"}
        hmmlearn's four types; jaxem extension: ``"lowrank"`` gives each state a
        covariance ``W_k W_kᵀ + Ψ_k`` with loadings ``W_k`` of ``covariance_rank``
        columns and ``Ψ_k`` diagonal (hidden Markov factor analysers: ``O(D q)``
        per state and step instead of ``O(D²)``). Its M-step is Ghahramani and
        Hinton's (maximum likelihood, ``min_covar`` added to every ``Ψ_k``): the
        means, covariance priors and ``missing='em'`` are refused with it, and
        ``covars_prior``, ``covars_weight`` must keep their defaults (not applied).
        The letter ``c`` covers ``loadings_`` and ``noise_variances_``: to start
        from your own, set both (``covars_`` cannot be set; it is formed from
        them) and leave ``c`` out of ``init_params``; leaving ``c`` out of
        ``params`` keeps them fixed. :meth:`partial_fit` is not available with it.
    covariance_rank : int or None, default=None
        jaxem extension: the rank ``q`` of ``"lowrank"`` covariances, ``1 <= q <
        n_features``; required with ``"lowrank"``, refused with any other type.
    min_covar : float
        Added to the diagonal of the data covariance that initialises ``covars_``
        (``"lowrank"``: added to every noise variance at every M-step).
    startprob_prior, transmat_prior : float or array
        Dirichlet concentrations of the start / transition probabilities.
    means_prior, means_weight : float or array
        Normal prior on the means (``means_weight`` must be 0 with ``"lowrank"``).
    covars_prior, covars_weight : float or array
        Prior on the covariances (hmmlearn's MAP M-step; not with ``"lowrank"``).
    algorithm : {"viterbi", "map"}
        Decoder of ``decode`` and ``predict``.
    random_state : int, RandomState or None
    n_iter : int
        Maximum EM iterations.
    tol : float
        Stop when the total log-likelihood increases by less than ``tol``.
    verbose : bool
        Print the log-likelihood history to stderr after fitting.
    params, init_params : str
        Letters of the parameters updated / initialised: ``s`` startprob, ``t``
        transmat, ``m`` means, ``c`` covars. Unlisted parameters keep the values
        you assigned to the attributes.
    implementation : {"log", "scaling", "scan", "associative", "blocked"}
        Forward-backward: ``"log"`` and ``"scaling"`` run the probability-space
        recursions with per-step scaling (:class:`jaxem.HMM`'s ``"scaled"``), equal to
        hmmlearn's log-space ones to rounding; where they refuse a sequence (zero
        transitions meeting emission spreads of hundreds of nats) ``fit`` with
        ``"log"`` runs again in log space (so do ``score`` and the posteriors), and
        ``"scaling"`` raises hmmlearn's underflow error, as it does where hmmlearn's
        does. ``"scan"`` (log space throughout), ``"associative"`` and ``"blocked"``
        choose another :class:`jaxem.HMM` algorithm.
    n_init : int
        Restarts run in parallel; the best by final log-likelihood is kept.
    mesh : None, int or jax.sharding.Mesh
        Devices to spread the fit over: an int splits the sequences over that many
        devices; a ``Mesh`` with axes ``"rows"`` (sequences) and/or ``"restarts"``
        splits the sequences, the restarts, or both (see :func:`jaxem.fit`). The
        fitted model equals the one-device fit up to the rounding of sums; decoding
        and scoring run on one device. Not saved by ``save``.
    step_decay : float in (0, 1], default=0.6
        jaxem extension, for :meth:`partial_fit`: step ``t`` of online EM moves the
        running statistics by ``(t + 2) ** -step_decay`` towards the batch's.
    assignment : {'soft', 'hard', 'stochastic'}, default='soft'
        jaxem extension: 'soft' is Baum-Welch (hmmlearn's); 'hard' is Viterbi
        training (the counts of each sequence's most probable path; ``monitor_``
        then records the paths' summed log-probability); 'stochastic' uses the
        counts of a path drawn from the posterior per sequence and runs ``n_iter``
        iterations, the fitted parameters being the M-step of the counts averaged
        over the second half of them (see :class:`jaxem.HMM`). The same parameter
        exists on every HMM estimator.
    missing : {'error', 'em'}, default='error'
        jaxem extension: what NaN in ``X`` means. 'error': hmmlearn's (scikit-learn's)
        "Input contains NaN". 'em': NaN entries are missing at random and Baum-Welch
        is exact for the observed data: each step's emission density is the
        observed coordinates' marginal, and the M-step uses the conditional means
        and covariances of the missing ones (as :class:`jaxem.GaussianMixture`'s
        ``missing='em'``). A row with nothing observed is a gap in the sequence: its
        states are inferred from their neighbours. ``score``, ``predict``, ``decode``
        and ``predict_proba`` accept NaN likewise; infinity is always refused.
    accelerate : None or 'squarem', default=None
        jaxem extension: None runs plain Baum-Welch (hmmlearn's iterations);
        'squarem' runs SQUAREM (Varadhan and Roland 2008) in every restart: far
        fewer E-steps where EM crawls, and the log-likelihood never decreases (see
        :func:`jaxem.fit`). ``n_iter_`` and ``monitor_`` then count E-steps. Not for
        :meth:`partial_fit` (online EM) nor ``assignment='stochastic'``. The same
        parameter exists on every HMM estimator.

    Attributes
    ----------
    startprob_ : (n_components,)
    transmat_ : (n_components, n_components)
    means_ : (n_components, n_features)
    covars_ : (n_components, n_features, n_features), full matrices as hmmlearn returns
        (``"lowrank"``: ``W Wᵀ + Ψ``, formed from the two attributes below on access)
    loadings_ : (n_components, n_features, covariance_rank)
        ``"lowrank"`` only: the loadings ``W_k`` (up to a rotation of the latent space).
    noise_variances_ : (n_components, n_features)
        ``"lowrank"`` only: the diagonals of ``Ψ_k``.
    n_features : int
    monitor_ : :class:`ConvergenceMonitor`

    Notes
    -----
    ``aic`` and ``bic`` count ``D q - q (q - 1) / 2`` free scalars for each state's
    ``"lowrank"`` loadings (they are defined up to a rotation of the latent space)
    and ``D`` for its noise variances, as ``GaussianMixture``'s ``"lowrank"``.

    Examples
    --------
    >>> import numpy as np
    >>> import jaxem
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(0, 1, (100, 1)), rng.normal(6, 1, (100, 1))])
    >>> model = jaxem.GaussianHMM(n_components=2, n_iter=50, random_state=0).fit(X, [120, 80])
    >>> np.sort(model.means_[:, 0]).round(0)
    array([0., 6.])
    >>> model.predict(X[:3], [3]).shape
    (3,)

    Low-rank covariances (jaxem extension), rank 1 in three features:

    >>> z = rng.normal(size=(200, 1))
    >>> X = np.where(np.arange(200)[:, None] < 100, -5, 5) + z * [1, 2, 3]
    >>> X = X + 0.1 * rng.normal(size=X.shape)
    >>> model = jaxem.GaussianHMM(2, covariance_type="lowrank", covariance_rank=1,
    ...                           n_iter=20, random_state=0).fit(X)
    >>> model.loadings_.shape, model.noise_variances_.shape, model.covars_.shape
    ((2, 3, 1), (2, 3), (2, 3, 3))
    """

    _emission_letters = {"m": "means_", "c": "covars_"}

    def __init__(
        self,
        n_components=1,
        covariance_type="diag",
        min_covar=1e-3,
        startprob_prior=1.0,
        transmat_prior=1.0,
        means_prior=0,
        means_weight=0,
        covars_prior=1e-2,
        covars_weight=1,
        algorithm="viterbi",
        random_state=None,
        n_iter=10,
        tol=1e-2,
        verbose=False,
        params="stmc",
        init_params="stmc",
        implementation="log",
        n_init=1,
        mesh=None,
        step_decay=0.6,
        assignment="soft",
        accelerate=None,
        missing="error",
        covariance_rank=None,
    ):
        super().__init__(
            n_components=n_components,
            startprob_prior=startprob_prior,
            transmat_prior=transmat_prior,
            algorithm=algorithm,
            random_state=random_state,
            n_iter=n_iter,
            tol=tol,
            verbose=verbose,
            params=params,
            init_params=init_params,
            implementation=implementation,
            n_init=n_init,
            mesh=mesh,
            step_decay=step_decay,
            assignment=assignment,
            accelerate=accelerate,
        )
        self.covariance_type = covariance_type
        self.covariance_rank = covariance_rank
        self.min_covar = min_covar
        self.means_prior = means_prior
        self.means_weight = means_weight
        self.covars_prior = covars_prior
        self.covars_weight = covars_weight
        self.missing = missing

    @property
    def covars_(self):
        """Covariances as full matrices ``(n_components, n_features, n_features)``."""
        if self._low_rank():
            return self._low_rank_covariances()
        # Spherical variances do not carry n_features: it comes from means_ (hmmlearn's
        # fill_covars takes it from the model).
        n_features = np.shape(self.means_)[1] if hasattr(self, "means_") else None
        return self._layout_family().full_covariances(self._covars_, self.n_components, n_features)

    @covars_.setter
    def covars_(self, covars):
        """Covariances in hmmlearn's per-type layout: (K,) spherical, (K, D) diag,
        (D, D) tied, (K, D, D) full; refused for 'lowrank'."""
        if self._low_rank():
            raise ValueError(_LOW_RANK_COVARS)
        self._covars_ = np.array(covars, dtype=np.float64, copy=True)

    def _low_rank(self) -> bool:
        return self.covariance_type == _validation.LOW_RANK

    def _low_rank_covariances(self):
        """``W Wᵀ + Ψ`` ``(K, D, D)`` from ``loadings_`` and ``noise_variances_`` (both
        or neither must be set: AttributeError when neither is, as an unset attribute)."""
        # A _covars_ left by a fit of another type (then set_params) is not used.
        found = [name for name in ("loadings_", "noise_variances_") if name in vars(self)]
        if not found:
            raise AttributeError("'GaussianHMM' object has no attribute 'covars_'")
        if len(found) == 1:
            raise ValueError(
                f"Only {found[0]} is set: a 'lowrank' GaussianHMM starts from both "
                "loadings_ and noise_variances_ (or neither, with 'c' in init_params)."
            )
        loadings, noise = self._checked_low_rank_attributes()
        return LowRankGaussian.covariances(LowRankGaussianParams(None, loadings, noise))

    def _checked_low_rank_attributes(self):
        """``loadings_`` and ``noise_variances_`` as float64, their shapes and values
        checked."""
        n, q = int(self.n_components), int(self.covariance_rank)
        loadings = np.asarray(self.loadings_, np.float64)
        noise = np.asarray(self.noise_variances_, np.float64)
        d = getattr(self, "n_features", None) or loadings.shape[1]
        if loadings.shape != (n, d, q):
            raise ValueError(f"loadings_ must have shape {(n, d, q)}, got {loadings.shape}.")
        if noise.shape != (n, d):
            raise ValueError(f"noise_variances_ must have shape {(n, d)}, got {noise.shape}.")
        if not (np.all(np.isfinite(loadings)) and np.all(noise > 0) and np.all(np.isfinite(noise))):
            raise ValueError("loadings_ must be finite and noise_variances_ finite and positive.")
        return loadings, noise

    def _check_X(self, X, reset):
        missing = self._accepts_missing()
        X = _validation.check_data(self, X, reset=reset, allow_nan=missing)
        if reset:
            if missing:
                _validation.check_observed_columns(X)
            self.n_features = X.shape[1]
        return X

    def _data_offset(self, X):
        """Features far from the origin are centred, as in the mixtures."""
        return self._centre(X)

    def _centred_means_prior(self):
        """``means_prior`` in the centred coordinates the fit works in."""
        offset = getattr(self, "_fit_offset", None)
        if offset is None or not np.any(offset):
            return self.means_prior
        return np.asarray(self.means_prior, np.float64) - offset

    def _sample_output(self, x):
        return x + self._offset(x.shape[1])

    def _layout_family(self):
        """A family for the covariance layout only (no priors); checks ``covariance_type``."""
        return Gaussian(covariance_type=self.covariance_type)

    def _family(self):
        if _validation.check_low_rank_options(
            self.covariance_type, self.covariance_rank, self.missing
        ):
            return self._low_rank_family()
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type must be one of {(*COVARIANCE_TYPES, _validation.LOW_RANK)}, "
                f"got {self.covariance_type!r}."
            )
        return Gaussian(
            covariance_type=self.covariance_type,
            reg_covar=0.0,
            map_prior=True,
            means_prior=self._centred_means_prior(),
            means_weight=self.means_weight,
            covars_prior=self.covars_prior,
            covars_weight=self.covars_weight,
            init_covar=self.min_covar,
            exact=True,
            missing=self._accepts_missing(),
        )

    def _low_rank_family(self):
        """The low-rank family, after refusing what its M-step does not do."""
        n_features = getattr(self, "n_features", None)
        check_rank(int(self.covariance_rank), n_features)
        defaults = {"means_weight": 0, "covars_prior": 1e-2, "covars_weight": 1}
        changed = [
            name
            for name, value in defaults.items()
            if not np.all(np.asarray(getattr(self, name)) == value)
        ]
        if changed:
            raise ValueError(
                f"{', '.join(changed)} (priors) are not available with "
                "covariance_type='lowrank', whose M-step is maximum likelihood with "
                f"min_covar added to the noise variances. Leave them at {defaults}."
            )
        return low_rank_gaussian(int(self.covariance_rank), reg_covar=float(self.min_covar))

    def _emission_fields(self):
        if self._low_rank():  # c: the loadings and the noise variances
            return {"m": (0,), "c": (1, 2)}
        return super()._emission_fields()

    def _check_online_support(self):
        if self._low_rank():
            raise ValueError(
                "partial_fit (online EM) does not support covariance_type='lowrank': its "
                "statistics are about the E-step's parameters. Use fit, or another "
                "covariance_type."
            )

    def _emission_params(self, family, dtype):
        n = self.n_components
        d = getattr(self, "n_features", None) or np.shape(self.means_)[1]
        # During init only the user-set leaves are used; stand-ins fill the others.
        means = np.asarray(getattr(self, "means_", np.zeros((n, d))), np.float64)
        if means.shape != (n, d):
            raise ValueError(f"means_ must have shape ({n}, n_features), got {means.shape}.")
        means = means - self._offset(d)  # the fit works on centred rows
        if self._low_rank():
            if hasattr(self, "covars_"):  # both set (or the property raises)
                loadings, noise = self._checked_low_rank_attributes()
            else:
                loadings = np.zeros((n, d, int(self.covariance_rank)))
                noise = np.ones((n, d))
            return family.from_layout(dtype, means=means, loadings=loadings, noise_variances=noise)
        if hasattr(self, "_covars_"):
            # hmmlearn's layout for the type (or its tiled spherical one), checked.
            covars = family.compact_covariances(self._covars_, n, d, name="covars_")
        else:
            covars = family.unit_covariances(n, d)
        # On the host (numpy, float64): no small programs to compile per fit.
        chol = family.cholesky_from_covariances(covars, name="covars_")
        return GaussianParams(np.asarray(means, dtype), np.asarray(chol, dtype))

    def _set_emission_attributes(self, family, emissions):
        self.means_ = np.asarray(emissions.means, np.float64) + self._offset(self.n_features)
        if self._low_rank():
            self.__dict__.pop("_covars_", None)
            self.loadings_ = np.asarray(emissions.loadings, np.float64)
            self.noise_variances_ = np.asarray(emissions.noise_variances, np.float64)
            return
        for name in ("loadings_", "noise_variances_"):
            self.__dict__.pop(name, None)
        layout = family.layout_from_cholesky(jax.device_get(emissions.precisions_cholesky))
        self._covars_ = layout["covariances"]

    def _layout_shape(self, attribute, n_components, n_features):
        """Shape of ``loadings_``, for loading saved estimators."""
        return (n_components, n_features, int(self.covariance_rank))

    def _n_fit_scalars_per_emission(self):
        n = int(self.n_components)
        d = getattr(self, "n_features", None) or np.shape(self.means_)[1]
        if self._low_rank():  # loadings up to a rotation, and noise (the family's count)
            return {"m": n * d, "c": self._low_rank_family().n_parameters(n, d) - n * d}
        covars = {
            "spherical": n,
            "diag": n * d,
            "full": n * d * (d + 1) // 2,
            "tied": d * (d + 1) // 2,
        }
        return {"m": n * d, "c": covars[self.covariance_type]}


class CategoricalHMM(_BaseHMM):
    """Hidden Markov model with categorical emissions (hmmlearn's ``CategoricalHMM``).

    ``X`` holds integer symbols, shape ``(n_samples, 1)``. Parameters as
    :class:`GaussianHMM`, with ``emissionprob_prior`` (Dirichlet concentration of
    the emission probabilities), ``n_features`` (number of symbols; ``None`` means
    ``X.max() + 1`` at fit) and the letter ``e`` for ``emissionprob_``.

    ``missing`` (jaxem extension), ``{'error', 'em'}``, default ``'error'``: with
    ``'em'``, NaN (or a negative code such as -1) marks a sample whose symbol is
    missing: a gap in its sequence, emitting nothing (its state is inferred from its
    neighbours) and counted in no emission probability.

    Examples
    --------
    >>> import numpy as np
    >>> import jaxem
    >>> X = np.array([[0], [0], [1], [2], [2], [1], [0]])
    >>> model = jaxem.CategoricalHMM(n_components=2, random_state=0).fit(X)
    >>> model.emissionprob_.shape, model.n_features
    ((2, 3), 3)
    """

    _emission_letters = {"e": "emissionprob_"}

    def __init__(
        self,
        n_components=1,
        startprob_prior=1.0,
        transmat_prior=1.0,
        *,
        emissionprob_prior=1.0,
        n_features=None,
        algorithm="viterbi",
        random_state=None,
        n_iter=10,
        tol=1e-2,
        verbose=False,
        params="ste",
        init_params="ste",
        implementation="log",
        n_init=1,
        mesh=None,
        step_decay=0.6,
        assignment="soft",
        accelerate=None,
        missing="error",
    ):
        super().__init__(
            n_components=n_components,
            startprob_prior=startprob_prior,
            transmat_prior=transmat_prior,
            algorithm=algorithm,
            random_state=random_state,
            n_iter=n_iter,
            tol=tol,
            verbose=verbose,
            params=params,
            init_params=init_params,
            implementation=implementation,
            n_init=n_init,
            mesh=mesh,
            step_decay=step_decay,
            assignment=assignment,
            accelerate=accelerate,
        )
        self.emissionprob_prior = emissionprob_prior
        self.n_features = n_features
        self.missing = missing

    def _check_X(self, X, reset):
        X = np.asarray(X)
        if not (self._accepts_missing() and X.ndim == 2 and X.dtype.kind in "iuf"):
            return self._check_symbols(X, reset)
        if np.isinf(X).any():
            raise ValueError("Input X contains infinity: only NaN marks a missing symbol.")
        gone = (np.isnan(X) | (X < 0)) if X.dtype.kind == "f" else X < 0
        if reset and X.size and gone.all():
            raise ValueError("X has no observed symbol (all missing): nothing to learn from.")
        self._check_symbols(X[~gone.any(axis=1)], reset)  # the observed symbols
        # Missing symbols are -1 on the device: all-zero one-hot features.
        return np.where(gone, -1, X).astype(np.int32)

    def _check_symbols(self, X, reset):
        X = np.asarray(X)
        if X.ndim == 1:
            raise ValueError(
                "CategoricalHMM expects X of shape (n_samples, 1); got a 1-D array. "
                "Use X.reshape(-1, 1)."
            )
        if X.ndim != 2 or X.shape[1] != 1:
            raise ValueError(f"CategoricalHMM expects X of shape (n_samples, 1), got {X.shape}.")
        if X.shape[0] == 0:
            raise ValueError("X has 0 samples; at least one is required.")
        if X.dtype.kind == "f" and not np.all(np.isfinite(X)):
            raise ValueError(
                "Input X contains NaN or infinity; symbols must be integers. "
                "CategoricalHMM(missing='em') takes NaN as a missing symbol."
            )
        n_symbols = self.n_features
        if n_symbols is None:
            if hasattr(self, "emissionprob_"):
                n_symbols = np.asarray(self.emissionprob_).shape[1]
            elif X.size and np.issubdtype(X.dtype, np.number):
                n_symbols = int(X.max()) + 1
        Categorical(max(int(n_symbols or 1), 1)).check_data(X)
        if reset:
            self.n_features = int(n_symbols)
        return X.astype(np.int32)

    def _obs_dtype(self, dtype):
        return jnp.int32

    def _family(self):
        n_symbols = self.n_features
        if n_symbols is None:
            n_symbols = np.asarray(self.emissionprob_).shape[1]
        return Categorical(
            int(n_symbols), prior=self.emissionprob_prior, missing=self._accepts_missing()
        )

    def _emission_params(self, family, dtype):
        probs = np.asarray(self.emissionprob_, np.float64)
        expected = (self.n_components, family.n_symbols)
        if probs.shape != expected:
            raise ValueError(f"emissionprob_ must have shape {expected}, got {probs.shape}.")
        # hmmlearn's one column of symbols: the family's (K, 1, n_symbols) layout.
        return family.from_layout(dtype, probabilities=probs[:, None, :])

    def _set_emission_attributes(self, family, emissions):
        # Floored log-probabilities of never-seen symbols come back as exact zeros.
        probs = family.to_layout(emissions)["probabilities"][:, 0, :]
        self.emissionprob_ = np.asarray(probs, np.float64)

    def _n_fit_scalars_per_emission(self):
        n_symbols = self.n_features
        if n_symbols is None:
            n_symbols = np.shape(self.emissionprob_)[1]
        # Every row of emissionprob_ sums to 1.
        return {"e": int(self.n_components) * (int(n_symbols) - 1)}


class PoissonHMM(_BaseHMM):
    """Hidden Markov model with independent Poisson emissions (hmmlearn's ``PoissonHMM``).

    ``X`` holds non-negative integer counts ``(n_samples, n_features)``. Parameters as
    :class:`GaussianHMM`, with ``lambdas_prior`` and ``lambdas_weight`` (Gamma prior
    shape α and rate β on the rates) and the letter ``l`` for ``lambdas_``.

    The M-step is the Gamma posterior mean per state, ``(α + Σ γ x) / (β + Σ γ)``.
    hmmlearn 0.3.3 uses the posterior weight summed over *all* states in place of
    ``Σ γ``; both agree for the default ``α = β = 0`` (maximum likelihood).

    Examples
    --------
    >>> import numpy as np
    >>> import jaxem
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.poisson(2, (100, 1)), rng.poisson(20, (100, 1))])
    >>> model = jaxem.PoissonHMM(n_components=2, n_iter=50, random_state=0).fit(X)
    >>> np.sort(model.lambdas_[:, 0]).round(0)
    array([ 2., 20.])
    """

    _emission_letters = {"l": "lambdas_"}

    def __init__(
        self,
        n_components=1,
        startprob_prior=1.0,
        transmat_prior=1.0,
        lambdas_prior=0.0,
        lambdas_weight=0.0,
        algorithm="viterbi",
        random_state=None,
        n_iter=10,
        tol=1e-2,
        verbose=False,
        params="stl",
        init_params="stl",
        implementation="log",
        n_init=1,
        mesh=None,
        step_decay=0.6,
        assignment="soft",
        accelerate=None,
    ):
        super().__init__(
            n_components=n_components,
            startprob_prior=startprob_prior,
            transmat_prior=transmat_prior,
            algorithm=algorithm,
            random_state=random_state,
            n_iter=n_iter,
            tol=tol,
            verbose=verbose,
            params=params,
            init_params=init_params,
            implementation=implementation,
            n_init=n_init,
            mesh=mesh,
            step_decay=step_decay,
            assignment=assignment,
            accelerate=accelerate,
        )
        self.lambdas_prior = lambdas_prior
        self.lambdas_weight = lambdas_weight

    def _check_X(self, X, reset):
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(
                f"PoissonHMM expects 2-D X (n_samples, n_features), got {X.ndim}-D; "
                "reshape a single feature with X.reshape(-1, 1)."
            )
        if X.shape[0] == 0:
            raise ValueError("X has 0 samples; at least one is required.")
        Poisson().check_data(X)
        if reset:
            self.n_features = X.shape[1]
        else:
            expected = getattr(self, "n_features", np.shape(self.lambdas_)[-1])
            if X.shape[1] != expected:
                raise ValueError(
                    f"X has {X.shape[1]} features, but PoissonHMM is expecting "
                    f"{expected} features as input."
                )
        return X.astype(np.float64)

    def _family(self):
        return Poisson(rates_prior=self.lambdas_prior, rates_weight=self.lambdas_weight)

    def _emission_params(self, family, dtype):
        lambdas = np.asarray(self.lambdas_, np.float64)
        n_features = getattr(self, "n_features", lambdas.shape[-1])
        expected = (self.n_components, n_features)
        if lambdas.shape != expected:
            raise ValueError(f"lambdas_ must have shape {expected}, got {lambdas.shape}.")
        return family.from_layout(dtype, rates=lambdas)

    def _set_emission_attributes(self, family, emissions):
        self.lambdas_ = np.asarray(family.to_layout(emissions)["rates"], np.float64)

    def _n_fit_scalars_per_emission(self):
        n_features = getattr(self, "n_features", None) or np.shape(self.lambdas_)[1]
        return {"l": int(self.n_components) * n_features}


class MultinomialHMM(_BaseHMM):
    """Hidden Markov model with multinomial emissions (hmmlearn's ``MultinomialHMM``).

    ``X`` holds non-negative integer counts ``(n_samples, n_features)``: every row is
    the counts of ``n_features`` symbols in ``n_trials`` draws. Parameters as
    :class:`GaussianHMM`, with ``n_trials`` and the letter ``e`` for
    ``emissionprob_`` (the symbol probabilities of every state, ``(n_components,
    n_features)``). The emissions are :class:`jaxem.families.Multinomial`.

    ``n_trials`` (int, array of one per sample, or None) is checked as hmmlearn
    does: ``fit`` refuses rows whose counts do not add up to it and, when it is
    None, sets it to the rows' totals; ``sample`` needs a single value. The
    log-density of a row uses the row's own total, as hmmlearn's. hmmlearn's
    ``emissionprob_`` initialisation draws uniform rows and normalises them; jaxem's
    is the M-step of random soft assignments of the rows (data-driven).
    hmmlearn's construction-time notice about its 0.3 change of meaning is not
    repeated.

    Examples
    --------
    >>> import numpy as np
    >>> import jaxem
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.multinomial(10, [0.8, 0.1, 0.1], 100),
    ...                     rng.multinomial(10, [0.1, 0.1, 0.8], 100)])
    >>> model = jaxem.MultinomialHMM(n_components=2, n_iter=20, random_state=0).fit(X)
    >>> np.sort(model.emissionprob_[:, 0]).round(1)
    array([0.1, 0.8])
    >>> model.sample(3)[0].sum(axis=1)
    array([10, 10, 10])
    """

    _emission_letters = {"e": "emissionprob_"}

    def __init__(
        self,
        n_components=1,
        n_trials=None,
        startprob_prior=1.0,
        transmat_prior=1.0,
        algorithm="viterbi",
        random_state=None,
        n_iter=10,
        tol=1e-2,
        verbose=False,
        params="ste",
        init_params="ste",
        implementation="log",
        n_init=1,
        mesh=None,
        step_decay=0.6,
        assignment="soft",
        accelerate=None,
    ):
        super().__init__(
            n_components=n_components,
            startprob_prior=startprob_prior,
            transmat_prior=transmat_prior,
            algorithm=algorithm,
            random_state=random_state,
            n_iter=n_iter,
            tol=tol,
            verbose=verbose,
            params=params,
            init_params=init_params,
            implementation=implementation,
            n_init=n_init,
            mesh=mesh,
            step_decay=step_decay,
            assignment=assignment,
            accelerate=accelerate,
        )
        self.n_trials = n_trials

    def _check_X(self, X, reset):
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(
                f"MultinomialHMM expects 2-D X (n_samples, n_features) of symbol counts, "
                f"got {X.ndim}-D."
            )
        if X.shape[0] == 0:
            raise ValueError("X has 0 samples; at least one is required.")
        try:
            Multinomial().check_data(X)
        except ValueError as error:  # hmmlearn's message first, then jaxem's detail
            raise ValueError(f"Symbol counts should be nonnegative integers: {error}") from None
        expected = getattr(self, "n_features", None)
        if reset or expected is None:
            if hasattr(self, "emissionprob_") and "e" not in self.init_params:
                expected = np.shape(self.emissionprob_)[-1]
            else:
                expected = X.shape[1]
        if X.shape[1] != expected:
            raise ValueError(
                f"X has {X.shape[1]} features, but MultinomialHMM is expecting "
                f"{expected} features as input."
            )
        if reset:
            self.n_features = X.shape[1]
            totals = X.sum(axis=1)
            if self.n_trials is None:
                self.n_trials = totals
            elif not np.all(totals == np.asarray(self.n_trials)):
                raise ValueError(
                    "Total count for each sample should add up to the number of trials "
                    "(n_trials); set n_trials=None to take every row's total."
                )
        return X.astype(np.float64)

    def _family(self, n_trials=1):
        return Multinomial(n_trials=n_trials)

    def _sampling_model(self):
        n_trials = np.unique(np.asarray(self.n_trials if self.n_trials is not None else []))
        if n_trials.size != 1 or n_trials.dtype.kind not in "iuf" or n_trials[0] < 0:
            raise ValueError(
                f"For sampling, a single n_trials must be given, got {self.n_trials!r}."
            )
        model = self._model("")
        return dataclasses.replace(model, family=self._family(int(n_trials[0])))

    def _sample_output(self, x):
        return np.rint(x).astype(np.int64)  # counts, as hmmlearn's

    def _emission_params(self, family, dtype):
        probs = np.asarray(self.emissionprob_, np.float64)
        n_features = getattr(self, "n_features", None) or probs.shape[-1]
        expected = (self.n_components, n_features)
        if probs.shape != expected:
            raise ValueError(f"emissionprob_ must have shape {expected}, got {probs.shape}.")
        return family.from_layout(dtype, probabilities=probs)

    def _set_emission_attributes(self, family, emissions):
        probs = family.to_layout(emissions)["probabilities"]
        self.emissionprob_ = np.asarray(probs, np.float64)

    def _n_fit_scalars_per_emission(self):
        n_features = getattr(self, "n_features", None) or np.shape(self.emissionprob_)[1]
        # Every row of emissionprob_ sums to 1.
        return {"e": int(self.n_components) * (int(n_features) - 1)}


class GMMHMM(_BaseHMM):
    """Hidden Markov model with Gaussian-mixture emissions (hmmlearn's ``GMMHMM``).

    Every state emits from a mixture of ``n_mix`` Gaussians
    (:class:`jaxem.families.GMM`). Parameters as :class:`GaussianHMM`, with
    ``n_mix``, ``weights_prior`` (Dirichlet concentration of the mixture weights) and
    hmmlearn's GMMHMM priors: ``means_prior``, ``means_weight``, and
    ``covars_prior`` / ``covars_weight`` (None: hmmlearn's defaults per covariance
    type, which make the M-step maximum likelihood for full, tied and diag, and for
    spherical when ``n_mix <= n_features``). Letters: ``s``, ``t``, ``m`` means,
    ``c`` covars, ``w`` weights.

    The M-step is hmmlearn's: the covariances are the scatter about the E-step's
    means (not the updated ones), so fits from the same start follow hmmlearn's
    iterates to rounding. ``"tied"`` is hmmlearn's: one covariance per state,
    shared by its mixture components. The initialisation is hmmlearn's (k-means of
    the samples into states, then of each state's samples into its components,
    uniform weights, the data covariance plus ``min_covar`` for every covariance),
    on jaxem's k-means. Differences: the priors may be scalars or arrays over the
    mixture components (per-state arrays are not supported), and for spherical
    covariances with ``n_mix > n_features`` hmmlearn's default ``covars_prior``
    shrinks the denominator below the weight, which jaxem's M-step clips at the
    weight. ``aic`` and ``bic`` count the weights' free scalars as hmmlearn 0.3.3
    does (``n_mix - 1``, not per state).

    Attributes
    ----------
    startprob_ : (n_components,)
    transmat_ : (n_components, n_components)
    weights_ : (n_components, n_mix)
    means_ : (n_components, n_mix, n_features)
    covars_ : (n_components, n_mix) spherical, (n_components, n_mix, n_features) diag,
        (n_components, n_mix, n_features, n_features) full, (n_components, n_features,
        n_features) tied
    n_features : int
    monitor_ : :class:`ConvergenceMonitor`

    Examples
    --------
    >>> import numpy as np
    >>> import jaxem
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(0, 1, (100, 1)), rng.normal(8, 1, (100, 1))])
    >>> model = jaxem.GMMHMM(n_components=2, n_mix=2, n_iter=20, random_state=0).fit(X)
    >>> model.means_.shape, model.weights_.shape, model.covars_.shape
    ((2, 2, 1), (2, 2), (2, 2, 1))
    >>> np.sort(model.means_.mean(axis=1)[:, 0]).round(0)
    array([0., 8.])
    """

    _emission_letters = {"w": "weights_", "m": "means_", "c": "covars_"}
    #: Layouts checked by ``load`` (``_persist``): these names mean other shapes elsewhere.
    _own_shapes = ("weights_", "means_", "covars_")

    def __init__(
        self,
        n_components=1,
        n_mix=1,
        min_covar=1e-3,
        startprob_prior=1.0,
        transmat_prior=1.0,
        weights_prior=1.0,
        means_prior=0.0,
        means_weight=0.0,
        covars_prior=None,
        covars_weight=None,
        algorithm="viterbi",
        covariance_type="diag",
        random_state=None,
        n_iter=10,
        tol=1e-2,
        verbose=False,
        params="stmcw",
        init_params="stmcw",
        implementation="log",
        n_init=1,
        mesh=None,
        step_decay=0.6,
        assignment="soft",
        accelerate=None,
    ):
        super().__init__(
            n_components=n_components,
            startprob_prior=startprob_prior,
            transmat_prior=transmat_prior,
            algorithm=algorithm,
            random_state=random_state,
            n_iter=n_iter,
            tol=tol,
            verbose=verbose,
            params=params,
            init_params=init_params,
            implementation=implementation,
            n_init=n_init,
            mesh=mesh,
            step_decay=step_decay,
            assignment=assignment,
            accelerate=accelerate,
        )
        self.n_mix = n_mix
        self.min_covar = min_covar
        self.weights_prior = weights_prior
        self.means_prior = means_prior
        self.means_weight = means_weight
        self.covars_prior = covars_prior
        self.covars_weight = covars_weight
        self.covariance_type = covariance_type

    def _check_X(self, X, reset):
        X = _validation.check_data(self, X, reset=reset)
        if reset:
            self.n_features = X.shape[1]
        return X

    def _n_features(self):
        return getattr(self, "n_features", None) or np.shape(self.means_)[-1]

    def _family(self):
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type must be one of {COVARIANCE_TYPES}, got {self.covariance_type!r}."
            )
        if not isinstance(self.n_mix, (int, np.integer)) or self.n_mix < 1:
            raise ValueError(f"n_mix must be a positive int, got {self.n_mix!r}.")
        covars_prior, covars_weight = hmmlearn_covariance_prior(
            self.covariance_type,
            int(self.n_mix),
            self._n_features(),
            self.covars_prior,
            self.covars_weight,
        )
        return GMM(
            n_mix=int(self.n_mix),
            covariance_type=self.covariance_type,
            reg_covar=0.0,
            map_prior=True,
            weights_prior=self.weights_prior,
            means_prior=self.means_prior,
            means_weight=self.means_weight,
            covars_prior=covars_prior,
            covars_weight=covars_weight,
            init_covar=self.min_covar,
            previous_means_scatter=True,
        )

    def _layout_shape(self, attribute, n_components, n_features):
        layout = {"weights_": "weights", "means_": "means", "covars_": "covariances"}
        shapes = self._family().layout_shapes(n_components, n_features)
        return shapes[layout[attribute]]

    def _emission_params(self, family, dtype):
        n, n_mix, d = int(self.n_components), int(self.n_mix), self._n_features()
        # During init only the user-set leaves are used; stand-ins fill the others.
        stand_in = {
            "weights_": np.full((n, n_mix), 1.0 / n_mix),
            "means_": np.zeros((n, n_mix, d)),
            "covars_": family.unit_covariances(n, d),
        }
        values = {}
        for name, default in stand_in.items():
            value = np.asarray(getattr(self, name, default), np.float64)
            expected = self._layout_shape(name, n, d)
            if value.shape != expected:
                raise ValueError(
                    f"{name} must have shape {expected} for covariance_type="
                    f"{self.covariance_type!r}, got {value.shape}."
                )
            values[name] = value
        return family.from_layout(
            dtype,
            weights=values["weights_"],
            means=values["means_"],
            covariances=values["covars_"],
        )

    def _set_emission_attributes(self, family, emissions):
        layout = family.to_layout(emissions)
        self.weights_ = np.asarray(layout["weights"], np.float64)
        self.means_ = np.asarray(layout["means"], np.float64)
        self.covars_ = np.asarray(layout["covariances"], np.float64)

    def _n_fit_scalars_per_emission(self):
        n, n_mix, d = int(self.n_components), int(self.n_mix), self._n_features()
        covars = {
            "spherical": n * n_mix,
            "diag": n * n_mix * d,
            "full": n * n_mix * d * (d + 1) // 2,
            "tied": n * d * (d + 1) // 2,
        }
        # hmmlearn 0.3.3 counts n_mix - 1 weights in all (not per state); so does jaxem.
        return {"m": n * n_mix * d, "c": covars[self.covariance_type], "w": n_mix - 1}


class _OnlineFit(NamedTuple):
    """What :meth:`_BaseHMM.partial_fit` carries between calls (not saved)."""

    model: Any
    online: engine.OnlineState
