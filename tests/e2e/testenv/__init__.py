"""Helpers shared by h3gate's e2e tests and benchmarks (imported, never run
by pytest itself). netem: an emulated network link between two network
namespaces (delay, random loss, rate limit)."""
