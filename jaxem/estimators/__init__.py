"""scikit-learn / hmmlearn drop-in estimators over the engine."""

from jaxem.estimators.gaussian_mixture import GaussianMixture

__all__ = ["GaussianMixture"]
