"""Framework adapters; each runs only inside a worker process."""
