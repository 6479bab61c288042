"""A TCP forwarder of the tests' own, in a process of its own, between keystile and
a peer (PostgreSQL, Redis), so that a test can make the network misbehave:

- :meth:`Forwarder.pause` (SIGSTOP): the network goes quiet, as in a partition or
  a hung server. Nothing is refused or closed: connections already open stay
  open, new ones complete their handshake in the kernel's backlog, and nothing
  written either way is answered until :meth:`Forwarder.resume` (SIGCONT);
- :meth:`Forwarder.freeze` (SIGUSR1): every connection open now goes silent for
  good, nothing closed; new ones are forwarded as before (a failover that moved
  the server, a NAT or load balancer that forgot the old connections);
- :meth:`Forwarder.kill` (SIGKILL): every connection is closed at once and new
  ones are refused until :meth:`Forwarder.start` listens on the same port again.

Run as a script: ``python forwarder.py LISTEN_PORT TARGET_HOST TARGET_PORT``; it
prints ``listening`` once it accepts connections, ``frozen`` once it froze them.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


class _Relay:
    """The forwarding itself (in the forwarder's process)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.opened = 0  # connections accepted so far; each is numbered in turn
        self.frozen = 0  # connections numbered below this are silent for good

    async def connected(self, client_in: asyncio.StreamReader,
                        client_out: asyncio.StreamWriter) -> None:  # fmt: skip
        number, self.opened = self.opened, self.opened + 1
        try:
            peer_in, peer_out = await asyncio.open_connection(self.host, self.port)
        except OSError:
            client_out.close()
            return
        await asyncio.gather(self._pipe(client_in, peer_out, number),
                             self._pipe(peer_in, client_out, number))  # fmt: skip

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    number: int) -> None:  # fmt: skip
        """Copy until either side is done, then close the writing side."""
        try:
            while data := await reader.read(65536):
                if number < self.frozen:  # swallowed, and nothing more is read: silence
                    await asyncio.Event().wait()
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    def freeze(self) -> None:
        self.frozen = self.opened
        print("frozen", flush=True)


async def _forward(listen: int, host: str, port: int) -> None:
    relay = _Relay(host, port)
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, relay.freeze)
    server = await asyncio.start_server(relay.connected, "127.0.0.1", listen, reuse_address=True)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


class Forwarder:
    """The forwarder process: 127.0.0.1:``port`` to ``host``:``target``."""

    def __init__(self, host: str, target: int) -> None:
        self.host, self.target = host, target
        with socket.socket() as sock:  # a free port, kept across kill and start
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Forwarder:
        """Listen (again, on the same port), forwarding every connection."""
        self.proc = subprocess.Popen(
            [sys.executable, __file__, str(self.port), self.host, str(self.target)],
            stdout=subprocess.PIPE,
        )
        if self._said() != b"listening\n":
            self.kill()
            raise RuntimeError(f"the forwarder did not start on 127.0.0.1:{self.port}")
        return self

    def pause(self) -> None:
        """SIGSTOP, returning once the process is stopped: from now on it is silent."""
        self._signal(signal.SIGSTOP)
        self._until_state(lambda state: state in "Tt")

    def resume(self) -> None:
        """SIGCONT: what was written meanwhile is forwarded now."""
        self._signal(signal.SIGCONT)
        self._until_state(lambda state: state not in "Tt")

    def freeze(self) -> None:
        """SIGUSR1, returning once the connections open now are silent for good."""
        self._signal(signal.SIGUSR1)
        assert self._said() == b"frozen\n"

    def kill(self) -> None:
        """SIGKILL (a stopped process too): its connections close, new ones are refused."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def _signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None, "the forwarder is not running"
        self.proc.send_signal(sig)

    def _said(self) -> bytes:
        assert self.proc is not None and self.proc.stdout is not None
        return self.proc.stdout.readline()

    def _until_state(self, wanted: Callable[[str], bool]) -> None:
        """Wait until the process's state letter (``/proc/PID/stat``) is as wanted."""
        assert self.proc is not None
        stat = Path(f"/proc/{self.proc.pid}/stat")
        deadline = time.monotonic() + 5
        while not wanted(stat.read_text().rpartition(")")[2].split()[0]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the forwarder's state did not change ({stat})")
            time.sleep(0.001)


if __name__ == "__main__":
    asyncio.run(_forward(int(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
