"""qbb: a SECOQC-style trusted-relay QKD backbone network stack.

Layers (bottom up): emulated QKD devices and key stores plus the Q3P link layer
(``qbb.q3p``), the QKDNL network layer (``qbb.netlayer``), OSPF-derived routing and
Q-RoKR key reservation (``qbb.routing``) and the QKDTL transport (``qbb.transport``).
"""

__version__ = "0.1.0"
