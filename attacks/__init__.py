"""Data-poisoning backdoor attacks on contrastive learning (CTRL, SSL-Backdoor, CorruptEncoder)."""
