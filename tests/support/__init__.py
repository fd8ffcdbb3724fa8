"""Helpers shared across test areas, so that no test module imports a conftest or another
test module: `requires` (skip locally, fail under CI), `budget` (fixture setup timeouts),
`plugin` (the hooks tests/conftest.py installs), the OpenAI-compatible stub server, and
small builders of models, runs and files the areas share."""
