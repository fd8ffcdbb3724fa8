"""`quantship run`: every stage from one pipeline.yaml, resumable, into one run directory."""
