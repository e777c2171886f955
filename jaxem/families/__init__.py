"""Component families shared by mixtures and hidden Markov models."""

from jaxem.families.base import Family, component_log_densities, log_densities
from jaxem.families.gaussian import (
    COVARIANCE_TYPES,
    Gaussian,
    GaussianHyper,
    GaussianParams,
    gaussian,
)

__all__ = [
    "Family",
    "log_densities",
    "component_log_densities",
    "Gaussian",
    "GaussianParams",
    "GaussianHyper",
    "COVARIANCE_TYPES",
    "gaussian",
]
