"""jaxem: batched Expectation-Maximization in JAX.

Every model's E and M steps are pure functions in log space; :func:`fit` runs
many random restarts at once in one compiled ``lax.while_loop`` and keeps the best.
"""

from jaxem import families, models, ops
from jaxem._iterate import Chunks
from jaxem.engine import (
    CONVERGED,
    MAX_ITER,
    NON_FINITE,
    RUNNING,
    STATUS_MESSAGES,
    FitResult,
    RestartSummary,
    fit,
)
from jaxem.estimators import CategoricalHMM, GaussianHMM, GaussianMixture, KMeans, PoissonHMM
from jaxem.families import (
    Bernoulli,
    BernoulliParams,
    Categorical,
    CategoricalParams,
    Gaussian,
    GaussianParams,
    Poisson,
    PoissonParams,
    bernoulli,
    categorical,
    gaussian,
    poisson,
)
from jaxem.models import (
    HMM,
    HMMParams,
    KMeansModel,
    KMeansParams,
    Mixture,
    MixtureParams,
    hmm,
    kmeans,
    mixture,
    pad_sequences,
)

__version__ = "0.1.0"

__all__ = [
    "GaussianMixture",
    "GaussianHMM",
    "CategoricalHMM",
    "PoissonHMM",
    "families",
    "models",
    "ops",
    "fit",
    "FitResult",
    "RestartSummary",
    "Chunks",
    "RUNNING",
    "CONVERGED",
    "MAX_ITER",
    "NON_FINITE",
    "STATUS_MESSAGES",
    "gaussian",
    "Gaussian",
    "GaussianParams",
    "mixture",
    "Mixture",
    "MixtureParams",
    "kmeans",
    "KMeans",
    "KMeansModel",
    "KMeansParams",
    "categorical",
    "Categorical",
    "CategoricalParams",
    "poisson",
    "Poisson",
    "PoissonParams",
    "bernoulli",
    "Bernoulli",
    "BernoulliParams",
    "hmm",
    "HMM",
    "HMMParams",
    "pad_sequences",
]
