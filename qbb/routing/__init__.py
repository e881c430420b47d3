"""OSPF-derived link-state routing (SECOQC §2.5.1-2.5.2) and Q-RoKR key reservation."""
