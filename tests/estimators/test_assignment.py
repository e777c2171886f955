"""The ``assignment`` parameter of the mixture estimators (hard and stochastic EM)."""

import warnings

import numpy as np
import pytest
from scipy import stats
from sklearn.exceptions import ConvergenceWarning

import jaxem
from tests.conftest import make_blobs

X, _ = make_blobs(n_samples=300, n_features=2, n_clusters=3, seed=4, spread=3.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_hard_gaussian_mixture_reports_the_classification_log_likelihood(dtype):
    gm = jaxem.GaussianMixture(
        3, covariance_type="diag", assignment="hard", n_init=2, random_state=0
    ).fit(X.astype(dtype))
    assert gm.means_.dtype == dtype
    bounds = np.asarray(gm.lower_bounds_)
    assert np.all(np.diff(bounds) >= -1e-5 * np.abs(bounds).max())
    # At convergence no label moves: lower_bound_ is the classification log-likelihood
    # of the fitted parameters, by scipy.
    log_joint = np.stack(
        [
            np.log(gm.weights_[k])
            + stats.multivariate_normal(gm.means_[k], np.diag(gm.covariances_[k])).logpdf(X)
            for k in range(3)
        ],
        axis=1,
    )
    rtol = 1e-5 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(gm.lower_bound_, log_joint.max(1).mean(), rtol=rtol)
    np.testing.assert_array_equal(gm.predict(X), log_joint.argmax(1))


def test_stochastic_mixture_runs_max_iter_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        gm = jaxem.GaussianMixture(3, assignment="stochastic", max_iter=40, random_state=0).fit(X)
    assert gm.n_iter_ == 40 and not gm.converged_
    np.testing.assert_allclose(gm.lower_bound_, gm.score(X), rtol=1e-5)
    soft = jaxem.GaussianMixture(3, random_state=0).fit(X)
    # About 100 rows per blob of unit variance: 0.1 is one standard error of a mean.
    np.testing.assert_allclose(np.sort(gm.means_, 0), np.sort(soft.means_, 0), atol=0.1)


def test_discrete_and_student_t_mixtures_take_the_parameter():
    counts = np.random.default_rng(0).poisson(3.0, size=(100, 2))
    assert jaxem.PoissonMixture(2, assignment="hard", random_state=0).fit(counts).converged_
    model = jaxem.StudentTMixture(2, assignment="stochastic", max_iter=5, random_state=0).fit(X)
    assert model.n_iter_ == 5


def test_unknown_assignment_is_refused():
    with pytest.raises(ValueError, match="'assignment' parameter of GaussianMixture must be"):
        jaxem.GaussianMixture(2, assignment="fuzzy").fit(X)


def test_partial_fit_refuses_stochastic():
    gm = jaxem.GaussianMixture(2, assignment="stochastic")
    with pytest.raises(ValueError, match="does not run stochastic EM"):
        gm.partial_fit(X)


def test_assignment_survives_save_and_load(tmp_path):
    gm = jaxem.GaussianMixture(2, assignment="hard", random_state=0).fit(X)
    gm.save(tmp_path / "gm.npz")
    loaded = jaxem.GaussianMixture.load(tmp_path / "gm.npz")
    assert loaded.assignment == "hard"
    np.testing.assert_array_equal(loaded.predict(X), gm.predict(X))


def _sequences():
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(6 * (i % 2), 1, (25, 1)) for i in range(8)]), [50] * 4


def test_hard_gaussian_hmm_monitors_the_viterbi_path_log_probability():
    X_seq, lengths = _sequences()
    hmm = jaxem.GaussianHMM(2, assignment="hard", n_iter=50, random_state=0).fit(X_seq, lengths)
    assert hmm.monitor_.converged and hmm.monitor_.iter < 50
    np.testing.assert_allclose(np.sort(hmm.means_[:, 0]), [0.0, 6.0], atol=0.3)
    # At convergence no path changes: the last value is the best paths' log-probability.
    log_prob, _ = hmm.decode(X_seq, lengths)
    np.testing.assert_allclose(hmm.monitor_.history[-1], log_prob, rtol=1e-10)


def test_stochastic_hmm_runs_n_iter_and_unknown_assignment_is_refused():
    X_seq, lengths = _sequences()
    hmm = jaxem.GaussianHMM(2, assignment="stochastic", n_iter=20, random_state=0)
    assert hmm.fit(X_seq, lengths).monitor_.iter == 20
    with pytest.raises(ValueError, match=r"assignment must be one of \('soft', 'hard'"):
        jaxem.PoissonHMM(2, assignment="fuzzy").fit(np.ones((10, 1), np.int64))
