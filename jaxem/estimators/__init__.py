"""scikit-learn / hmmlearn drop-in estimators over the engine."""

from jaxem.estimators.factor_analysis import FactorAnalysis, ProbabilisticPCA
from jaxem.estimators.gaussian_mixture import GaussianMixture
from jaxem.estimators.hmm import CategoricalHMM, GaussianHMM, PoissonHMM
from jaxem.estimators.kmeans import KMeans

__all__ = [
    "GaussianMixture",
    "GaussianHMM",
    "CategoricalHMM",
    "PoissonHMM",
    "KMeans",
    "FactorAnalysis",
    "ProbabilisticPCA",
]
