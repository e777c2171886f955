"""The one base of jaxem's scikit-learn-style estimators.

Every estimator goes the same way: validate the input as scikit-learn does, pick
the precision, centre the rows, build the functional model (with its sizes padded
to buckets so refits, grid searches and cross-validation folds reuse compiled
programs), run :mod:`jaxem.engine`, and map the family's parameters onto the
estimator's attributes. A subclass is its parameter constraints, its model and its
attribute map:

``_build_model(n_components, max_components)``
    The functional model for this estimator's parameters.
``_set_fitted(params, offset, dtype)``
    Fitted attributes from the trimmed best parameters (centred coordinates).
``_fitted_params(offset, dtype)``
    Model parameters (centred, trimmed) from the fitted attributes.
``_n_components_fitted()``
    The fitted number of components (from the attributes).

Precision follows the input as in scikit-learn: public methods are wrapped in
:func:`in_input_precision` (``fit``: float32 input computes in float32, anything else
in float64) or :func:`in_fitted_precision` (``predict`` and the like: the fitted
attributes' precision), which turn JAX's 64-bit types on or off for the call only.
Under scikit-learn's array API dispatch, the same wrappers take array API input
(array_api_strict, PyTorch, ...) and return results and fitted attributes in its
namespace and on its device (:mod:`jaxem.estimators._array_api`).

Nothing here compiles: the engine owns every program.
"""

from __future__ import annotations

import functools
from numbers import Integral

import jax
import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import Interval, StrOptions

from jaxem import engine
from jaxem.estimators import _array_api, _persist, _validation

__all__ = [
    "ACCELERATE_CONSTRAINT",
    "ACCELERATE_PARAMETER",
    "EMEstimator",
    "component_bucket",
    "in_input_precision",
    "in_fitted_precision",
]

#: Below this many (padded rows x padded components), component counts are padded to
#: a bucket: compiling dominates the fit, so programs are shared across counts.
_SMALL_PROBLEM = 1 << 20

#: scikit-learn parameter constraint of the ``mesh`` parameter (see :func:`jaxem.fit`).
MESH_CONSTRAINT = [None, Interval(Integral, 1, None, closed="left"), jax.sharding.Mesh]
#: scikit-learn parameter constraint of the ``accelerate`` parameter (see :func:`jaxem.fit`).
ACCELERATE_CONSTRAINT = [None, StrOptions({"squarem"})]
#: Its documentation (numpydoc, indented as a class's Parameters entries).
ACCELERATE_PARAMETER = """accelerate : None or 'squarem', default=None
        jaxem extension: None runs plain EM; 'squarem' runs SQUAREM (Varadhan and
        Roland 2008) in every restart: far fewer E-steps where EM crawls (overlapping
        components), and the log-likelihood never decreases (see :func:`jaxem.fit`).
        ``n_iter_`` then counts E-steps. Not with ``assignment='stochastic'``."""
#: A feature whose mean exceeds this many standard deviations is centred before fitting.
_FAR_FROM_ORIGIN = 10.0


def component_bucket(n_components: int, n_rows: int) -> int:
    """Array size for ``n_components`` components on ``n_rows`` rows.

    Small problems pad to ``max(8, next power of two)`` components, so a sweep over
    ``n_components`` (a BIC loop, a grid search) compiles once per bucket; masked
    components cost little there. Large problems use the exact count, where the
    E-step's cost, not compiling, dominates.

    >>> [component_bucket(k, 150) for k in (1, 6, 8, 9, 33)]
    [8, 8, 8, 16, 64]
    >>> component_bucket(3, 1_000_000)
    3
    """
    bucket = max(8, 1 << (int(n_components) - 1).bit_length())
    if engine.padded_rows(n_rows) * bucket <= _SMALL_PROBLEM:
        return bucket
    return int(n_components)


def in_input_precision(method):
    """Run ``method(self, X, ...)`` in the precision of ``X`` (see
    :func:`jaxem.estimators._validation.input_precision`), and under scikit-learn's
    array API dispatch in ``X``'s namespace (:mod:`jaxem.estimators._array_api`)."""

    @functools.wraps(method)
    def wrapper(self, X, *args, **kwargs):
        with _validation.precision(_validation.input_precision(X)):
            return method(self, X, *args, **kwargs)

    converted = _array_api.in_input_namespace(wrapper)

    @functools.wraps(method)
    def checked(self, *args, **kwargs):
        if _array_api.dispatch_enabled():  # before the conversion turns dispatch off
            self._check_array_api_dispatch()
        return converted(self, *args, **kwargs)

    return checked


def in_fitted_precision(method):
    """Run ``method(self, ...)`` in the precision of the fitted attributes (unfitted:
    unchanged, so the method raises its ``NotFittedError``), and under scikit-learn's
    array API dispatch in its input's namespace."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with _validation.precision(self._stored_dtype()):
            return method(self, *args, **kwargs)

    return _array_api.in_input_namespace(wrapper)


class EMEstimator(BaseEstimator):
    """Validation, precision, centring, padding, the engine call and attributes."""

    #: Outputs computed together by every predict-like call, so they share one program
    #: (``predict`` after ``score`` compiles nothing); empty: only those asked for.
    _evaluation_outputs: tuple[str, ...] = ()
    #: The fitted attribute whose dtype is the fit's precision.
    _precision_attribute = "means_"

    # -- to be provided by subclasses -----------------------------------------------------
    def _build_model(self, n_components: int, max_components: int):
        raise NotImplementedError

    def _set_fitted(self, params, offset, dtype) -> None:
        raise NotImplementedError

    def _fitted_params(self, offset, dtype):
        raise NotImplementedError

    def _n_components_fitted(self) -> int:
        raise NotImplementedError

    # -- fitting --------------------------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = self._accepts_missing()
        return tags

    def _accepts_missing(self) -> bool:
        """Whether NaN marks missing entries: ``missing='em'`` on the estimators that
        have that parameter; otherwise scikit-learn's "Input contains NaN"."""
        return getattr(self, "missing", "error") == "em"

    def _validate_fit_input(self, X, ensure_min_samples: int = 1):
        """``(X, dtype, offset)``: scikit-learn's validation, the precision, the centre."""
        missing = self._accepts_missing()
        X = _validation.check_data(
            self, X, reset=True, ensure_min_samples=ensure_min_samples, allow_nan=missing
        )
        if missing:
            _validation.check_observed_columns(X)
        dtype = _validation.compute_dtype(X.dtype)
        return X, dtype, self._centre(X)

    def _centre(self, X):
        """The offset subtracted from every row before fitting (added back after).

        Features far from the origin against their spread (timestamps, offsets of
        1e8: ``|mean| > 10 std``) are centred, so the seeding's expanded distances
        and the float32 copy keep their digits. Others are left alone: centring
        there would gain nothing and would round a narrow cluster near the origin
        to the resolution of the data's mean. With missing entries (NaN), the
        observed mean of every feature is subtracted.
        """
        if self._accepts_missing():
            # Missing entries start as 0 (seeding, initial statistics): the observed means.
            return np.nanmean(X, axis=0, dtype=np.float64)
        mean = X.mean(axis=0, dtype=np.float64)
        spread = X.std(axis=0, dtype=np.float64)
        return np.where(np.abs(mean) > _FAR_FROM_ORIGIN * spread, mean, 0.0)

    def _model_for(self, n_components: int, n_rows: int):
        return self._build_model(int(n_components), component_bucket(n_components, n_rows))

    def _centred(self, X, offset, dtype):
        return np.asarray(np.asarray(X, np.float64) - offset, dtype)

    def _engine_fit(
        self, model, x, *, n_restarts, init_params=None, rerun_alone=False, **options
    ) -> engine.FitResult:
        """:func:`jaxem.engine.fit`, keeping what every restart did.

        ``init_params``: None (the model's init), parameters, or a function
        ``(n_restarts, first_restart) -> parameters`` of those restarts (so a restart
        can be initialised again alone). With ``rerun_alone``, the kept restart of a
        batch is run again on its own, as a fit with ``n_init=1`` runs it: XLA
        vectorises a batch of restarts differently from a single one, which moves the
        last bits, and a result must not depend on how many restarts ran beside it
        (scikit-learn: more restarts never end lower than restart 0 alone).
        """

        def run(count, first):
            start = init_params(count, first) if callable(init_params) else init_params
            return engine.fit(
                model,
                x,
                n_restarts=count,
                first_restart=first,
                init_params=start,
                mesh=getattr(self, "mesh", None),
                accelerate=getattr(self, "accelerate", None),
                **options,
            )

        result = run(n_restarts, 0)
        # jaxem extensions: every restart's outcome, and which one was kept.
        self.restarts_ = engine.RestartSummary(*_host(tuple(result.restarts)))
        self.best_restart_ = int(result.best_restart)
        if rerun_alone and n_restarts > 1:
            try:
                alone = run(1, self.best_restart_)
            except engine.AllRestartsFailed:  # it did not fail in the batch: keep that
                return result
            # Restart ``best``'s record becomes that of its run alone.
            best = self.best_restart_
            solo = _host(tuple(alone.restarts))
            self.restarts_ = engine.RestartSummary(
                *jax.tree.map(_with_row(best), tuple(self.restarts_), solo)
            )
            result = alone._replace(best_restart=best, restarts=self.restarts_)
        return result

    def _refuse_online_acceleration(self) -> None:
        """Raise ``ValueError`` when ``accelerate`` is set: online EM takes one step
        per batch, with nothing to extrapolate."""
        accelerate = getattr(self, "accelerate", None)
        if accelerate is not None:
            raise ValueError(
                f"partial_fit runs online EM, to which accelerate={accelerate!r} does not "
                f"apply; set accelerate=None on this {type(self).__name__} to call it."
            )

    def _initial_params(self, model, x, *, key, n_restarts, weights=None, first_restart=0):
        """Every restart's initial parameters as the fit with ``key`` would start."""
        return engine.initialise(
            model,
            x,
            key=key,
            n_restarts=n_restarts,
            weights=weights,
            first_restart=first_restart,
            mesh=getattr(self, "mesh", None),
        )

    # -- evaluation -----------------------------------------------------------------------
    def _offset(self, n_features: int):
        offset = getattr(self, "_fit_offset", None)
        return np.zeros(n_features) if offset is None else offset  # attributes set by hand

    def _evaluation_input(self, X, allow_nan=None):
        """``(X, x, dtype, offset)`` for predict-like methods: fitted check, validation
        (NaN allowed as :meth:`_accepts_missing` says, unless ``allow_nan`` is given),
        the fit's precision and centring."""
        _validation.check_fitted(self)
        allow_nan = self._accepts_missing() if allow_nan is None else allow_nan
        X = _validation.check_data(self, X, reset=False, allow_nan=allow_nan)
        dtype = self._fitted_dtype()
        offset = self._offset(X.shape[1])
        return X, self._centred(X, offset, dtype), dtype, offset

    def _check_array_api_dispatch(self) -> None:
        """Raise ``NotImplementedError`` if these parameters cannot be fitted under
        scikit-learn's array API dispatch, as scikit-learn's class does (default: all
        can; array API input is converted at the boundary)."""

    def _stored_dtype(self):
        """dtype of the fitted attributes, or None before fitting."""
        stored = getattr(self, self._precision_attribute, None)
        return None if stored is None else np.asarray(stored).dtype

    def _fitted_dtype(self):
        """The precision to evaluate in (inside :func:`in_fitted_precision`)."""
        return _validation.compute_dtype(self._stored_dtype())

    def _n_parameters(self) -> int:
        """Free parameters of the fitted model, for BIC and AIC."""
        n_components = self._n_components_fitted()
        model = self._build_model(n_components, n_components)
        return int(model.n_parameters(int(self.n_features_in_)))

    def _evaluate(self, X, outputs, *, params=None, chunk_size=None):
        """Outputs of the fitted (or given, trimmed) parameters on ``X`` as numpy arrays,
        run through the padded model so every fitted size shares one program."""
        X, x, dtype, offset = self._evaluation_input(X)
        n_components = self._n_components_fitted()
        model = self._model_for(n_components, X.shape[0])
        if params is None:
            params = self._fitted_params(offset, dtype)
        names = (outputs,) if isinstance(outputs, str) else tuple(outputs)
        shared = self._evaluation_outputs
        together = shared if set(names) <= set(shared) else names
        values = engine.evaluate(model, model.pad(params), x, together, chunk_size=chunk_size)
        values = dict(zip(together, _host(values)))
        return values[outputs] if isinstance(outputs, str) else tuple(values[n] for n in names)

    # -- saving and loading ---------------------------------------------------------------
    def save(self, path) -> None:
        """Write the fitted estimator to ``path``: a ``.npz`` file, no pickle.

        The file holds ``get_params()`` and every fitted attribute (private state such
        as the centring offset included) with their dtypes; see
        :mod:`jaxem.estimators._persist` for the format. Read it back with
        :meth:`load` or :func:`jaxem.load`.

        Parameters
        ----------
        path : str, path-like or binary file object
            Written as given (no extension is added); ``.npz`` is the convention.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the estimator is not fitted.
        ValueError
            If a parameter is not data (a callable ``init``, an arbitrary object); the
            message names it. A ``RandomState`` is saved with its state.

        Examples
        --------
        >>> import tempfile, pathlib
        >>> import numpy as np
        >>> from jaxem import GaussianMixture
        >>> X = np.array([[1, 2], [1, 4], [1, 0], [10, 2], [10, 4], [10, 0]])
        >>> gm = GaussianMixture(n_components=2, random_state=0).fit(X)
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "gm.npz"
        >>> gm.save(path)
        >>> loaded = GaussianMixture.load(path)
        >>> bool(np.all(loaded.predict(X) == gm.predict(X))), loaded.means_.dtype
        (True, dtype('float64'))
        """
        _persist.save_estimator(path, self)

    @classmethod
    def load(cls, path):
        """The estimator :meth:`save` wrote to ``path``, ready to predict.

        Nothing in the file is executed: it is read with ``allow_pickle=False`` and
        the class is matched by name against this class and jaxem's estimators.

        Parameters
        ----------
        path : str, path-like or binary file object

        Returns
        -------
        estimator : an instance of this class (or of a jaxem subclass of it)

        Raises
        ------
        ValueError
            If the file is not a jaxem estimator file, holds another class, or is
            truncated, altered or inconsistent (the message says which).
        """
        return _persist.load_estimator(path, cls)


def _host(tree):
    """Device arrays to numpy (one transfer)."""
    return jax.tree.map(np.asarray, jax.device_get(tree))


def _with_row(index: int):
    """``(batch, solo) -> batch`` with row ``index`` replaced by ``solo``'s only row."""

    def replace(batch, solo):
        batch = np.array(batch)
        batch[index] = solo[0]
        return batch

    return replace
