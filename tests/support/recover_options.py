"""`quantship validate --recover` settings shared by the tiny recover tests (transformers and GGUF)."""

# Cheap validation: one short long-context window, no task files.
SMALL = ["--long-window", "128", "--long-windows", "1", "--tasks", "none"]
# Thresholds loose enough that only the check a test tightens on the command line can fail.
LOOSE = (
    "max_perplexity_delta: 10\nmax_kl_p99: 100\nmin_top1_agreement: 0\nmax_greedy_regressions: 1\nmax_probe_drop: 1\n"
    "max_long_context_delta: 10\n"
)
