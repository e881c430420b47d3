"""QKDTL: the QKD transport layer (SECOQC §3.3-3.4)."""
