"""DIFT: density-based identification and fine-tuning (the defense and its Lightning mixin)."""
