"""Latent-variable models: one module per latent structure."""

from jaxem.models.hmm import (
    HMM,
    HMMHyper,
    HMMParams,
    HMMStats,
    hmm,
    pad_sequences,
)
from jaxem.models.kmeans import KMeansModel, KMeansParams, KMeansStats, kmeans
from jaxem.models.latent_linear import (
    LatentLinear,
    LatentLinearHyper,
    LatentLinearParams,
    LatentLinearStats,
    factor_analysis,
    ppca,
)
from jaxem.models.lda import LDA, Documents, LDAHyper, LDAParams, LDAStats, lda
from jaxem.models.mixture import (
    BayesianMixture,
    BayesianMixtureHyper,
    BayesianMixtureParams,
    BayesianMixtureStats,
    LabelledRows,
    Mixture,
    MixtureHyper,
    MixtureParams,
    MixtureStats,
    bayesian_mixture,
    mixture,
)

__all__ = [
    "HMM",
    "HMMHyper",
    "HMMParams",
    "HMMStats",
    "hmm",
    "pad_sequences",
    "KMeansModel",
    "KMeansParams",
    "KMeansStats",
    "kmeans",
    "LatentLinear",
    "LatentLinearHyper",
    "LatentLinearParams",
    "LatentLinearStats",
    "factor_analysis",
    "ppca",
    "LDA",
    "LDAHyper",
    "LDAParams",
    "LDAStats",
    "Documents",
    "lda",
    "LabelledRows",
    "Mixture",
    "MixtureHyper",
    "MixtureParams",
    "MixtureStats",
    "mixture",
    "BayesianMixture",
    "BayesianMixtureHyper",
    "BayesianMixtureParams",
    "BayesianMixtureStats",
    "bayesian_mixture",
]
