"""Scripts that measure and print figures; run them as ``python -m benchmarks.NAME``."""
