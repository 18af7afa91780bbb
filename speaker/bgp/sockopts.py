"""Socket options a BGP session needs: TCP MD5 signatures (RFC 2385) and the TTL that
separates directly connected eBGP (TTL 1) from multihop and iBGP (TTL 255).

Python has no wrapper for TCP_MD5SIG, so the Linux `struct tcp_md5sig` is packed by
hand: a 128-byte sockaddr_storage with the peer address, flags, prefix length, key
length, ifindex, then an 80-byte key.  On a listening socket one key is installed
per peer address; the kernel then signs and checks every segment with that peer,
including the SYN of an accepted connection.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

TCP_MD5SIG = 14
TCP_MD5SIG_MAXKEYLEN = 80
_SOCKADDR_STORAGE = 128


def tcp_md5sig(peer_address: str, password: str) -> bytes:
    """The `struct tcp_md5sig` for `setsockopt(IPPROTO_TCP, TCP_MD5SIG, ...)`."""
    key = password.encode()
    if len(key) > TCP_MD5SIG_MAXKEYLEN:
        raise ValueError(f"TCP MD5 password longer than {TCP_MD5SIG_MAXKEYLEN} bytes")
    addr = ipaddress.ip_address(peer_address)
    if addr.version == 4:
        sockaddr = struct.pack("=H", socket.AF_INET) + struct.pack("!H", 0) + addr.packed
    else:
        sockaddr = (struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", 0, 0) + addr.packed
                    + struct.pack("=I", 0))
    sockaddr = sockaddr.ljust(_SOCKADDR_STORAGE, b"\x00")
    # flags 0, prefixlen 0 (exact address), key length, ifindex 0
    return sockaddr + struct.pack("=BBHI", 0, 0, len(key), 0) + key.ljust(TCP_MD5SIG_MAXKEYLEN,
                                                                         b"\x00")


def set_md5(sock: socket.socket, peer_address: str, password: str) -> None:
    """Install (or with an empty password, remove) the MD5 key for one peer."""
    sock.setsockopt(socket.IPPROTO_TCP, TCP_MD5SIG, tcp_md5sig(peer_address, password))


def set_ttl(sock: socket.socket, ttl: int) -> None:
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
    else:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)


def unmap(address: str) -> str:
    """'::ffff:10.0.0.1' (an IPv4 peer on a dual-stack socket) -> '10.0.0.1'."""
    addr = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)
