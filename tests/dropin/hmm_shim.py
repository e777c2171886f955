"""``hmmlearn.hmm`` with jaxem's estimators in place of hmmlearn's.

Copied next to hmmlearn's test files as ``jaxem_hmm_shim.py``; their ``from hmmlearn
import hmm`` (or ``from .. import hmm``) is rewritten to import this module as
``hmm``. ``GaussianHMM``, ``CategoricalHMM``, ``PoissonHMM``, ``MultinomialHMM`` and ``GMMHMM``
are jaxem's; every other attribute (``VariationalGaussianHMM``, ...) is hmmlearn's own.
"""

from hmmlearn import hmm as _hmmlearn_hmm

from jaxem import GMMHMM, CategoricalHMM, GaussianHMM, MultinomialHMM, PoissonHMM

__all__ = ["CategoricalHMM", "GaussianHMM", "PoissonHMM", "MultinomialHMM", "GMMHMM"]


def __getattr__(name):
    return getattr(_hmmlearn_hmm, name)
