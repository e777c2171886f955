"""Latent-variable models: one module per latent structure."""

from jaxem.models.kmeans import KMeans, KMeansParams, KMeansStats, kmeans, kmeans_plusplus
from jaxem.models.mixture import Mixture, MixtureHyper, MixtureParams, MixtureStats, mixture

__all__ = [
    "KMeans",
    "KMeansParams",
    "KMeansStats",
    "kmeans",
    "kmeans_plusplus",
    "Mixture",
    "MixtureHyper",
    "MixtureParams",
    "MixtureStats",
    "mixture",
]
