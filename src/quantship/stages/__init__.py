"""Pipeline stages: each reads earlier outputs from the run directory and writes its own."""
