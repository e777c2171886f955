"""Benchmarks for jaxem and its peer libraries (see ``benchmarks/README.md``)."""
