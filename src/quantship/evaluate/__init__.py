"""Measurements of a model: perplexity, top-k distributions, greedy generations, probes."""
