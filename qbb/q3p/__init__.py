"""Q3P / QKDLL: the QKD link layer (SECOQC §3.1, Table II)."""
