"""Model sources and checkpoint intake."""
