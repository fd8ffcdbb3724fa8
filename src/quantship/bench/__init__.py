"""Load generator and statistics for OpenAI-compatible endpoints (`quantship bench`)."""
