"""A stand-in guest on a TAP (tests only; no Firecracker can run on the build machines).

  tap-guest.py TAP MAC ADDRESS GATEWAY DNS_PORT NAME

Attaches to the persistent TAP as Firecracker would (TUNSETIFF, no packet information), asks for
the gateway's MAC (ARP), then sends one DNS query for NAME to GATEWAY:DNS_PORT from ADDRESS and
prints `gateway-mac <mac>` and `answer <a.b.c.d>|rcode <n>`. Exits 1 when nothing answers in 5 s.
"""
import fcntl
import os
import select
import socket
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000

tap, mac, addr, gw, port, name = sys.argv[1:7]
me = bytes.fromhex(mac.replace(":", ""))
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", tap.encode(), IFF_TAP | IFF_NO_PI))


def frames(send, want, seconds=5.0):
    deadline = time.time() + seconds
    os.write(fd, send)
    while time.time() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.3)
        if not ready:
            os.write(fd, send)
            continue
        got = want(os.read(fd, 65536))
        if got is not None:
            return got
    sys.exit(1)


arp = b"\xff" * 6 + me + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + me + socket.inet_aton(addr) + b"\x00" * 6 + socket.inet_aton(gw)
gw_mac = frames(arp, lambda f: f[22:28] if f[12:14] == b"\x08\x06" and f[20:22] == b"\x00\x02" and f[28:32] == socket.inet_aton(gw) else None)
print("gateway-mac", ":".join("%02x" % b for b in gw_mac), flush=True)


def checksum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    return ~(s + (s >> 16)) & 0xFFFF


query = struct.pack("!HHHHHH", 0x6B6C, 0x0100, 1, 0, 0, 0) + b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00" + struct.pack("!HH", 1, 1)
udp = struct.pack("!HHHH", 40053, int(port), 8 + len(query), 0) + query
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, socket.inet_aton(addr), socket.inet_aton(gw))
ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
frame = gw_mac + me + b"\x08\x00" + ip + udp


def dns_answer(f):
    if f[12:14] != b"\x08\x00" or f[23] != 17:
        return None
    ihl = (f[14] & 0x0F) * 4
    dns = f[14 + ihl + 8 :]
    if len(dns) < 12 or dns[:2] != b"\x6b\x6c":
        return None
    rcode, answers = dns[3] & 0x0F, struct.unpack("!H", dns[6:8])[0]
    if rcode or not answers:
        return "rcode %d" % rcode
    return "answer " + socket.inet_ntoa(dns[-4:])


print(frames(frame, dns_answer), flush=True)
