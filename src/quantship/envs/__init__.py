"""Pinned environments that quantship builds for its serving stacks, apart from its own venv."""
