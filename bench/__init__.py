"""agentexec's benchmark suite: `uv run python -m bench.run`. See bench/README.md."""
