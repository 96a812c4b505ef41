"""Whole sessions with python-socketio, another implementation of the protocol than the official
JavaScript client, on every transport: long-polling with the upgrade, long-polling only, and
WebSocket only.

    python3 clients/test/python_client.py        # needs python-socketio[client] from PyPI

Starts target/debug/roulette (or $ROULETTE_BIN) on a free loopback port; exits non-zero on the
first failure and ends with an "N passed, N failed" line.
"""

import os
import queue
import re
import subprocess
import sys
import threading

import socketio

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
WAIT = 5


def start_server():
    binary = os.environ.get("ROULETTE_BIN") or os.path.join(ROOT, "target", "debug", "roulette")
    proc = subprocess.Popen(
        [binary, "--host", "127.0.0.1", "--port", "0", "--log-format", "text"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "RUST_LOG"} | {"NO_COLOR": "1"},
    )
    for line in proc.stdout:
        m = re.search(r"listening on (http://[\d.:]+)", line)
        if m:
            # Keep draining the log so that the server never blocks on a full pipe.
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc, m.group(1)
    raise RuntimeError("the server did not start")


class User:
    """A python-socketio client that records every event it receives."""

    def __init__(self, url, transports, name):
        self.events = queue.Queue()
        self.sio = socketio.Client(reconnection=False)
        self.sio.on("*", lambda event, data=None: self.events.put((event, data)))
        self.sio.connect(url, transports=transports, wait_timeout=WAIT)
        self.sio.emit("authenticate", {"userId": name})
        auth = self.expect("authenticated")
        assert auth["userId"] == name, auth
        assert auth["resumed"] is False, auth

    def expect(self, name):
        """The next event `name`, skipping queue updates."""
        while True:
            event, data = self.events.get(timeout=WAIT)
            if event == name:
                return data
            assert event in ("queue-status", "searching"), (name, event, data)

    def emit(self, event, data=None):
        self.sio.emit(event, data)

    def transport(self):
        return self.sio.transport()


def session(url, transports, tag):
    a = User(url, transports, f"py-a-{tag}")
    b = User(url, transports, f"py-b-{tag}")
    a.emit("find-random-partner", {})
    a.expect("searching")
    b.emit("find-random-partner", {})
    ma, mb = a.expect("matched"), b.expect("matched")
    assert ma["roomId"] == mb["roomId"] and ma["isInitiator"] != mb["isInitiator"], (ma, mb)
    room = ma["roomId"]
    # Signalling in order, then a chat message (both get it: the sender's copy is its receipt).
    a.emit("webrtc-offer", {"roomId": room, "offer": {"type": "offer", "sdp": "v=0\r\n"}})
    for n in range(10):
        a.emit("webrtc-ice-candidate", {"roomId": room, "candidate": {"candidate": f"c{n}"}})
    assert b.expect("webrtc-offer")["fromUserId"] == f"py-a-{tag}"
    got = [b.expect("webrtc-ice-candidate")["candidate"]["candidate"] for _ in range(10)]
    assert got == [f"c{n}" for n in range(10)], got
    b.emit("webrtc-answer", {"roomId": room, "answer": {"type": "answer", "sdp": "v=0\r\n"}})
    assert a.expect("webrtc-answer")["roomId"] == room
    a.emit("chat-message", {"roomId": room, "message": "hello from python"})
    assert b.expect("chat-message")["message"] == "hello from python"
    assert a.expect("chat-message")["message"] == "hello from python"
    # A bad payload is answered, the connection kept.
    a.emit("chat-message", {"roomId": room})
    e = a.expect("error")
    assert (e["code"], e["event"]) == ("invalid-payload", "chat-message"), e
    # Skipping: the partner is told with the Node server's word.
    b.emit("next-partner")
    left = a.expect("partner-left")
    assert left == {"reason": "next-partner", "roomId": room, "canReconnect": False}, left
    used = a.transport()
    a.sio.disconnect()
    b.sio.disconnect()
    return used


def main():
    proc, url = start_server()
    passed = failed = 0
    try:
        for transports, want in (
            (["polling", "websocket"], "websocket"),
            (["polling"], "polling"),
            (["websocket"], "websocket"),
        ):
            name = "+".join(transports)
            try:
                used = session(url, transports, name.replace("+", "-"))
                assert used == want, (name, used)
                passed += 1
                print(f"ok - a whole session with python-socketio over {name} (ended on {used})")
            except Exception as e:  # noqa: BLE001 - every failure is reported, then counted
                failed += 1
                print(f"not ok - a whole session with python-socketio over {name}: {e!r}")
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
