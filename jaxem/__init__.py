"""jaxem: batched Expectation-Maximization in JAX.

Every model's E and M steps are pure functions in log space; :func:`fit` runs
many random restarts at once in one compiled ``lax.while_loop`` and keeps the best.
"""

from jaxem import contract, engine, families, models, ops, seeding
from jaxem._differentiate import AdjointNotConverged, DifferentiableFit, fit_differentiable
from jaxem._stream import fit_stream, open_source
from jaxem.contract import Chunks, Family, Model, Status
from jaxem.engine import (
    CONVERGED,
    MAX_ITER,
    NON_FINITE,
    RUNNING,
    STATUS_MESSAGES,
    FitResult,
    RestartSummary,
    TracedFit,
    enable_compilation_cache,
    fit,
    fit_traced,
    rows_across_processes,
)
from jaxem.estimators import (
    CategoricalHMM,
    GaussianHMM,
    GaussianMixture,
    KMeans,
    MiniBatchKMeans,
    PoissonHMM,
)
from jaxem.estimators._persist import load, load_fit, save_fit
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
from jaxem.selection import Selection, select

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
    "fit_traced",
    "select",
    "Selection",
    "rows_across_processes",
    "fit_stream",
    "open_source",
    "TracedFit",
    "fit_differentiable",
    "DifferentiableFit",
    "AdjointNotConverged",
    "enable_compilation_cache",
    "contract",
    "engine",
    "seeding",
    "Model",
    "Family",
    "Status",
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
    "MiniBatchKMeans",
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
    "load",
    "save_fit",
    "load_fit",
]
