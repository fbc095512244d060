"""A relay that refuses connections part of the time, for the failover tests under faults.

``FlappingRelay`` is a loopback TCP front door to a real SMTP server (``target``): while up it
forwards every connection; while down its listening socket is closed, so new connections are
refused, and the connections it carries are cut, except one whose client has sent the final
dot of DATA and not yet had the reply (cutting it there would make an ambiguous outcome, which
is not what a refused connection is). A cut connection is one the worker finds dead at its next
MAIL: nothing was accepted, so the message may go to the next relay at once (CONTRACT 16).

``cycle(up, down)`` flaps in a thread of its own until ``stop()``; ``down_phases`` and
``cut`` count what happened, for the report.
"""

from __future__ import annotations

import socket
import threading
from contextlib import suppress

FINAL_DOT = b"\r\n.\r\n"


class _Link:
    """One proxied connection: the client's socket, the server's, and whether the client waits
    for the reply to its final dot (then it is not cut)."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client, self.server = client, server
        self.lock = threading.Lock()
        self.awaiting_reply = False
        self.closed = False
        self._tail = b""

    def forward_up(self, data: bytes) -> bool:
        """Client → server; False once the link was cut. The flag is set before the bytes
        leave, under the lock the cutter takes, so a cut never lands after a final dot."""
        with self.lock:
            if self.closed:
                return False
            self._tail = (self._tail + data)[-len(FINAL_DOT) :]
            if self._tail == FINAL_DOT:
                self.awaiting_reply = True
            self.server.sendall(data)
        return True

    def forward_down(self, data: bytes) -> bool:
        """Server → client; the reply clears the flag once it is on its way."""
        with self.lock:
            if self.closed:
                return False
            self.client.sendall(data)
            self.awaiting_reply = False
        return True

    def cut(self) -> bool:
        with self.lock:
            if self.awaiting_reply or self.closed:
                return False
            self.closed = True
        for sock in (self.client, self.server):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        return True


class FlappingRelay:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:target`` while up."""

    def __init__(self, target: int) -> None:
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = int(probe.getsockname()[1])
        probe.close()
        self.down_phases = 0
        self.cut = 0
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._cycler: threading.Thread | None = None

    def up(self) -> None:
        """Listen again on the same port (retried briefly: the port may linger)."""
        while not self._stopping.is_set():
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                listener.bind(("127.0.0.1", self.port))
            except OSError:  # still held by a socket in the kernel: try again shortly
                listener.close()
                self._stopping.wait(0.05)
                continue
            listener.listen(64)
            self._listener = listener
            threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
            return

    def down(self) -> None:
        """Refuse new connections and cut every carried one not waiting for its reply."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accept thread
            listener.close()
        self.down_phases += 1
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            if link.cut():
                self.cut += 1
            elif not link.closed:
                with self._lock:
                    self._links.append(link)  # cut at the next down phase

    def cycle(self, up_seconds: float, down_seconds: float) -> None:
        """Up and down in turn, in a thread, until ``stop``; starts up."""
        self.up()

        def loop() -> None:
            while not self._stopping.wait(up_seconds):
                self.down()
                if self._stopping.wait(down_seconds):
                    return
                self.up()

        self._cycler = threading.Thread(target=loop, name="flapping-relay", daemon=True)
        self._cycler.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._cycler is not None:
            self._cycler.join(5)
        self.down()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed by ``down``
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            link = _Link(client, server)
            with self._lock:
                self._links.append(link)
            threading.Thread(target=self._pump, args=(link, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(link, False), daemon=True).start()

    def _pump(self, link: _Link, upward: bool) -> None:
        source = link.client if upward else link.server
        forward = link.forward_up if upward else link.forward_down
        with suppress(OSError):
            while data := source.recv(65536):
                if not forward(data):
                    return
        # One side hung up: close both, as the relay itself would.
        with link.lock:
            link.closed = True
        for sock in (link.client, link.server):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
