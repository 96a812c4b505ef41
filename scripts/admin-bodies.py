#!/usr/bin/env python3
# For BENCHMARKS.md (issue 30): what strangers' unfinished admin bodies make the server hold.
# N connections POST a 2 MB body to PATH, send 1.99 MB of it and never finish; prints the
# server's VmRSS (KB) before, while held, and HOLD seconds later. Usage: bodies.py PORT PID N PATH [TOKEN]
import socket, sys, time
port, pid, n, path = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
token = sys.argv[5] if len(sys.argv) > 5 else None
rss = lambda: int([l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0].split()[1])
before = rss(); held = []; chunk = b"x" * 65536; refused = 0
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 2000000\r\n\r\n".encode())
    s.settimeout(0.5)
    try:
        for _ in range(30): s.sendall(chunk)          # 1.97 MB
    except OSError: refused += 1
    held.append(s)
time.sleep(1); during = rss()
time.sleep(10); later = rss()
print(f"before {before} KB, with {n} held {during} KB, 10 s later {later} KB, cut off early: {refused}")
