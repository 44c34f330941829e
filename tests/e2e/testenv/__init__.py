"""Helpers shared by h3gate's e2e tests and benchmarks (imported, never run
by pytest itself). netem: an emulated network link between two network
namespaces (delay, random loss, rate limit). groups: upstream servers that
name themselves (idserver.py), files with [upstream NAME] and [route NAME]
blocks, labelled /metrics series. load: a bounded load generator."""
