"""The cfylogs benchmark harness: `python -m bench` (see bench/README.md)."""
