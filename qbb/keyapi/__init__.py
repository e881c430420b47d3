"""Application key interface (SECOQC §3.4 phases, ETSI GS QKD 004 semantics)."""
