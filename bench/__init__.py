"""Benchmark of the neurocards bot against the test fakes (see bench/README.md)."""
