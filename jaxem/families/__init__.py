"""Component families shared by mixtures and hidden Markov models."""

from jaxem.families.base import Family, component_log_densities, log_densities
from jaxem.families.bernoulli import (
    Bernoulli,
    BernoulliHyper,
    BernoulliParams,
    BernoulliStats,
    bernoulli,
)
from jaxem.families.categorical import (
    Categorical,
    CategoricalHyper,
    CategoricalParams,
    categorical,
)
from jaxem.families.gaussian import (
    COVARIANCE_TYPES,
    Gaussian,
    GaussianHyper,
    GaussianParams,
    GaussianPriorHyper,
    GaussianStats,
    WishartPrior,
    gaussian,
)
from jaxem.families.gaussian_mixture import GMM, GMMHyper, GMMParams, gmm
from jaxem.families.low_rank_gaussian import (
    LowRankGaussian,
    LowRankGaussianHyper,
    LowRankGaussianInitStats,
    LowRankGaussianParams,
    LowRankGaussianStats,
    low_rank_gaussian,
)
from jaxem.families.multinomial import (
    Multinomial,
    MultinomialHyper,
    MultinomialParams,
    multinomial,
)
from jaxem.families.poisson import Poisson, PoissonHyper, PoissonParams, poisson
from jaxem.families.student_t import (
    StudentT,
    StudentTHyper,
    StudentTParams,
    StudentTStats,
    student_t,
)
from jaxem.families.von_mises_fisher import (
    VonMisesFisher,
    VonMisesFisherHyper,
    VonMisesFisherParams,
    von_mises_fisher,
)

__all__ = [
    "Family",
    "log_densities",
    "component_log_densities",
    "Gaussian",
    "GaussianParams",
    "GaussianStats",
    "GaussianHyper",
    "COVARIANCE_TYPES",
    "gaussian",
    "GaussianPriorHyper",
    "WishartPrior",
    "Categorical",
    "CategoricalParams",
    "CategoricalHyper",
    "categorical",
    "Poisson",
    "PoissonParams",
    "PoissonHyper",
    "poisson",
    "Bernoulli",
    "BernoulliParams",
    "BernoulliHyper",
    "BernoulliStats",
    "bernoulli",
    "StudentT",
    "StudentTParams",
    "StudentTStats",
    "StudentTHyper",
    "student_t",
    "LowRankGaussian",
    "LowRankGaussianParams",
    "LowRankGaussianStats",
    "LowRankGaussianInitStats",
    "LowRankGaussianHyper",
    "low_rank_gaussian",
    "Multinomial",
    "MultinomialParams",
    "MultinomialHyper",
    "multinomial",
    "VonMisesFisher",
    "VonMisesFisherParams",
    "VonMisesFisherHyper",
    "von_mises_fisher",
    "GMM",
    "GMMParams",
    "GMMHyper",
    "gmm",
]
