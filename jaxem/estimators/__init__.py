"""scikit-learn / hmmlearn drop-in estimators over the engine."""

from jaxem.estimators.bayesian_mixture import BayesianGaussianMixture
from jaxem.estimators.discrete_mixtures import (
    BernoulliMixture,
    CategoricalMixture,
    MultinomialMixture,
    PoissonMixture,
)
from jaxem.estimators.factor_analysis import FactorAnalysis, ProbabilisticPCA
from jaxem.estimators.gaussian_mixture import GaussianMixture
from jaxem.estimators.hmm import (
    GMMHMM,
    CategoricalHMM,
    GaussianHMM,
    MultinomialHMM,
    PoissonHMM,
)
from jaxem.estimators.kmeans import KMeans
from jaxem.estimators.lda import LatentDirichletAllocation
from jaxem.estimators.minibatch_kmeans import MiniBatchKMeans
from jaxem.estimators.regression_mixture import MixtureOfExperts, RegressionMixture
from jaxem.estimators.student_t_mixture import StudentTMixture
from jaxem.estimators.von_mises_fisher_mixture import VonMisesFisherMixture

__all__ = [
    "GaussianMixture",
    "BayesianGaussianMixture",
    "GaussianHMM",
    "CategoricalHMM",
    "PoissonHMM",
    "MultinomialHMM",
    "GMMHMM",
    "KMeans",
    "MiniBatchKMeans",
    "PoissonMixture",
    "BernoulliMixture",
    "CategoricalMixture",
    "StudentTMixture",
    "MultinomialMixture",
    "VonMisesFisherMixture",
    "FactorAnalysis",
    "ProbabilisticPCA",
    "LatentDirichletAllocation",
    "RegressionMixture",
    "MixtureOfExperts",
]
