"""Harness that runs scikit-learn's and hmmlearn's own test files against jaxem.

``harness`` copies the peers' test files out of the installed packages at test time
and points their imports at jaxem's estimators; ``peer_conftest`` and ``hmm_shim``
are copied next to them. Nothing of the peers' code is kept in this repository.
"""
