"""Wire constants shared by the layers (shared/DESIGN.md, "Wire conventions").

* The classical channel of every QBB link carries Q3P frames as UDP datagrams
  between the two nodes' underlay addresses on :data:`Q3P_UDP_PORT` (both ends).
* QKDNL protocol numbers follow IANA where the format is the standard one (1 ICMP,
  89 OSPF) and use the experimental numbers of RFC 3692 for our own (253, 254).
"""

Q3P_UDP_PORT = 7355

PROTO_ICMP = 1
PROTO_OSPF = 89
PROTO_QKDTL = 253
PROTO_QROKR = 254
