"""Scripts the kernel tests run as real triggers (inside lab namespaces)."""

# a TCP sink: prints its port, then the number of bytes it received
SINK = """
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam); s.bind((sys.argv[1], 0)); s.listen()
print(s.getsockname()[1], flush=True)
s.settimeout(20)
c, _ = s.accept(); c.settimeout(20)
n = 0
while True:
    b = c.recv(65536)
    if not b:
        break
    n += len(b)
print(n, flush=True)
"""

# sends 200 KB in 1000-byte writes: prints its local port and pid first
SENDER = """
import socket, sys, os
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
c = socket.socket(fam); c.settimeout(20)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
c.connect((sys.argv[1], int(sys.argv[2])))
print(c.getsockname()[1], os.getpid(), flush=True)
for _ in range(200):
    c.sendall(b"x" * 1000)
c.shutdown(socket.SHUT_WR)
c.recv(1)
"""
