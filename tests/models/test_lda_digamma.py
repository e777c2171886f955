"""The LDA model's fast digamma (``jaxem.models.lda._digamma``) against scipy's ``psi``
in float64, over the arguments the E-step meets (priors down to 1e-3, counts up to 1e6):
within 8 float64 epsilons (``jax.scipy.special.digamma`` itself is 6.6 away at worst
on these points) and float32 to float32."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import psi

import jaxem.models.lda  # noqa: F401  (the module; ``jaxem.models.lda`` is the builder)

_digamma = sys.modules["jaxem.models.lda"]._digamma
ARGUMENTS = np.concatenate([np.geomspace(1e-3, 1e6, 2001), [1.4616321449683622, 0.5, 1.0, 2.0]])


@pytest.mark.parametrize(
    "dtype, tolerance", [(np.float64, 8 * np.finfo(np.float64).eps), (np.float32, 1e-6)]
)
def test_digamma_matches_scipy(dtype, tolerance):
    with jax.enable_x64(dtype == np.float64):
        ours = np.asarray(_digamma(jnp.asarray(ARGUMENTS, dtype)))
    assert ours.dtype == dtype
    reference = psi(ARGUMENTS.astype(dtype).astype(np.float64))
    # Absolute near ψ's root (1.4616...), relative elsewhere.
    error = np.abs(ours - reference) / np.maximum(1.0, np.abs(reference))
    assert error.max() < tolerance
