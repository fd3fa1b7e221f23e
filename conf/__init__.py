"""Hydra configuration tree of the dift harness (config groups live in the sub-folders)."""
