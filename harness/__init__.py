"""Age-and-gender classification benchmarking harness (framework-free core)."""
