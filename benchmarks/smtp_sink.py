"""A small asyncio SMTP sink (``python -m benchmarks.smtp_sink --port N``): accepts every
message and throws it away, printing ``mesg=<count>`` lines like ``smtp-sink -c`` so both sinks
are read the same way. Used when Postfix's C ``smtp-sink`` is not installed (CI, the smoke
test), and for the realistic workload (``--faults realistic``: the recipients
``benchmarks.workloads.fault_of`` names get ``451`` once or ``550`` at RCPT). It speaks just
enough SMTP for ``smtplib``: no TLS, no AUTH, no pipelining."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys

from benchmarks.workloads import fault_of

_EHLO = b"250-builtin-sink\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 33554432\r\n"
_OK = b"250 2.0.0 Ok\r\n"
_IDLE_SECONDS = 300.0  # a client that says nothing for this long is dropped
_LINE_LIMIT = 8 * 1024 * 1024  # a whole message body passes through one readuntil()
_RECIPIENT = re.compile(rb"<user(\d{1,9})@")


class Sink:
    """Counts accepted messages; the count is printed by ``report``. With ``faults``, answers
    RCPT for the recipients ``fault_of`` names: 550 always, 451 the first time only."""

    def __init__(self, faults: bool = False) -> None:
        self.messages = 0
        self.faults = faults
        self._deferred: set[bytes] = set()

    def rcpt_reply(self, line: bytes) -> bytes:
        found = _RECIPIENT.search(line) if self.faults else None
        fault = fault_of(int(found.group(1))) if found else None
        if fault == "550":
            return b"550 5.1.1 Recipient address rejected: User unknown\r\n"
        if fault == "451" and found and found.group(1) not in self._deferred:
            self._deferred.add(found.group(1))
            return b"451 4.3.0 Temporary failure, please try again later\r\n"
        return _OK

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 builtin-sink ESMTP\r\n")
        try:
            while True:
                line = await asyncio.wait_for(reader.readline(), _IDLE_SECONDS)
                if not line:
                    break
                verb = line[:4].upper()
                if verb == b"DATA":
                    writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    await asyncio.wait_for(reader.readuntil(b"\r\n.\r\n"), _IDLE_SECONDS)
                    self.messages += 1
                    writer.write(b"250 2.0.0 Ok: queued\r\n")
                elif verb in (b"EHLO", b"LHLO"):
                    writer.write(_EHLO)
                elif verb == b"RCPT":
                    writer.write(self.rcpt_reply(line))
                elif verb == b"QUIT":
                    writer.write(b"221 2.0.0 Bye\r\n")
                    break
                else:  # HELO, MAIL, RCPT, RSET, NOOP: accept everything
                    writer.write(_OK)
                await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def report(self, interval: float) -> None:
        shown = -1
        while True:
            if self.messages != shown:
                shown = self.messages
                sys.stdout.write(f"mesg={shown}\n")
                sys.stdout.flush()
            await asyncio.sleep(interval)


async def serve(host: str, port: int, interval: float, faults: bool = False) -> None:
    """Serve until cancelled (the process is terminated by the benchmark)."""
    sink = Sink(faults)
    server = await asyncio.start_server(sink.session, host, port, backlog=256, limit=_LINE_LIMIT)
    reporter = asyncio.create_task(sink.report(interval))
    async with server:
        try:
            await server.serve_forever()
        finally:
            reporter.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between counts")
    parser.add_argument("--faults", choices=("none", "realistic"), default="none")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, args.interval, args.faults == "realistic"))


if __name__ == "__main__":
    main()
