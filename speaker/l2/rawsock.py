"""One AF_PACKET socket per announcing interface, kept open for the daemon's life.

Why kept: opening a socket per packet (what scapy's `sendp` does) costs far
more than sending on an open one, and failover speed is the point
(bench/l2_failover.py measures it).

A classic BPF filter attached before the socket is bound lets only ARP
requests and replies and ICMPv6 Neighbor Solicitations and Advertisements
(without extension headers, as RFC 4861 senders emit them) reach Python, so
ordinary traffic on a busy interface costs the daemon nothing; the replies and
advertisements are there so that another host's claim to one of our addresses
is seen (broadcast and all-nodes ones reach every host; unicast replies to
others are not delivered here anyway).  The socket joins all-multicast on the
interface because solicitations go to solicited-node groups that no address
of ours joins (the LoadBalancer address is not configured on the interface).
"""

from __future__ import annotations

import ctypes
import socket
import struct

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_ALLMULTI = 2
PACKET_IGNORE_OUTGOING = 23
PACKET_OUTGOING = 4
SO_ATTACH_FILTER = 26

# (code, jt, jf, k); jumps are relative to the next instruction.
_LDH, _LDB, _JEQ, _RET = 0x28, 0x30, 0x15, 0x06
BPF_ARP_OR_ND = (
    (_LDH, 0, 0, 12),        # 0: ethertype
    (_JEQ, 0, 3, 0x0806),    # 1: ARP -> 2, else -> 5
    (_LDH, 0, 0, 20),        # 2: ARP opcode
    (_JEQ, 7, 0, 1),         # 3: request -> accept, else -> 4
    (_JEQ, 6, 7, 2),         # 4: reply -> accept, else drop
    (_JEQ, 0, 6, 0x86DD),    # 5: IPv6 -> 6, else drop
    (_LDB, 0, 0, 20),        # 6: next header
    (_JEQ, 0, 4, 58),        # 7: ICMPv6 -> 8, else drop
    (_LDB, 0, 0, 54),        # 8: ICMPv6 type
    (_JEQ, 1, 0, 135),       # 9: Neighbor Solicitation -> accept, else -> 10
    (_JEQ, 0, 1, 136),       # 10: Neighbor Advertisement -> accept, else drop
    (_RET, 0, 0, 0xFFFF),    # 11: accept
    (_RET, 0, 0, 0),         # 12: drop
)


def _attach_filter(sock: socket.socket, program: tuple[tuple[int, int, int, int], ...]) -> None:
    code = b"".join(struct.pack("HBBI", *insn) for insn in program)
    buf = ctypes.create_string_buffer(code)
    fprog = struct.pack("HL", len(program), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


class RawSocket:
    """A non-blocking packet socket on `ifname` that receives ARP and Neighbor
    Discovery frames and sends whole Ethernet frames."""

    def __init__(self, ifname: str, rcvbuf: int = 1 << 20) -> None:
        self.ifname = ifname
        # Protocol 0 receives nothing until bind: the filter is in place first,
        # so no unfiltered frame is ever queued.
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            _attach_filter(sock, BPF_ARP_OR_ND)
            try:
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            except OSError:  # kernels before 4.20: outgoing frames are skipped by pkttype
                pass
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.bind((ifname, ETH_P_ALL))
            self.ifindex = socket.if_nametoindex(ifname)
            mreq = struct.pack("iHH8s", self.ifindex, PACKET_MR_ALLMULTI, 0, b"")
            sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.mac: bytes = sock.getsockname()[4]

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self, budget: int) -> list[bytes]:
        """Up to `budget` queued frames (fewer when the queue runs dry)."""
        out = []
        for _ in range(budget):
            try:
                data, address = self.sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                break
            if address[2] != PACKET_OUTGOING:
                out.append(data)
        return out

    def send(self, frame: bytes) -> bool:
        """Queue `frame`; False if the kernel would block or refused it (it is dropped:
        ARP is best-effort and the sender retries)."""
        try:
            self.sock.send(frame)
            return True
        except OSError:
            return False

    def close(self) -> None:
        self.sock.close()
