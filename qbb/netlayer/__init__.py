"""QKDNL: the QKD network layer (SECOQC §3.2, Appendix D)."""
