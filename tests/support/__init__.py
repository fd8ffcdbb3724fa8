"""Test helpers shared across areas (the OpenAI-compatible stub server)."""
