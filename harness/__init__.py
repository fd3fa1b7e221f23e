"""Training entry points, data pipeline, SSL methods and evaluation for the dift benchmark."""
