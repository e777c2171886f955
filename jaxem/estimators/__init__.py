"""scikit-learn / hmmlearn drop-in estimators over the engine."""

from jaxem.estimators.gaussian_mixture import GaussianMixture
from jaxem.estimators.hmm import CategoricalHMM, GaussianHMM, PoissonHMM
from jaxem.estimators.kmeans import KMeans
from jaxem.estimators.minibatch_kmeans import MiniBatchKMeans

__all__ = [
    "GaussianMixture",
    "GaussianHMM",
    "CategoricalHMM",
    "PoissonHMM",
    "KMeans",
    "MiniBatchKMeans",
]
