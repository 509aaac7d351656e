"""Consoles: a byte stream to and from a machine's terminal, which the console page's WebSocket relays
(api/console.py). A driver's `console(ref)` opens one: LXC a shell in the container on a pseudo-terminal, the
simulator a shell that says it is simulated."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import shlex
import signal
import struct
import termios
from collections.abc import Sequence
from typing import Protocol


class Terminal(Protocol):
    async def read(self) -> bytes:
        """What the machine wrote since the last read, waiting for some; b"" once the terminal has closed."""
        ...

    async def write(self, data: bytes) -> None:
        """Keystrokes, as a terminal sends them (\\r for Enter)."""
        ...

    async def close(self) -> None:
        """End the session (idempotent): the shell is hung up on."""
        ...


class PtyTerminal:
    """A command (a shell in a machine) on a pseudo-terminal of this host, in a session of its own."""

    def __init__(self, process: asyncio.subprocess.Process, master: int) -> None:
        self.process = process
        self.master = master
        self._output: asyncio.Queue[bytes] = asyncio.Queue()
        self._closed = False
        asyncio.get_running_loop().add_reader(master, self._readable)

    @classmethod
    async def spawn(cls, argv: Sequence[str], *, rows: int = 24, cols: int = 80) -> PtyTerminal:
        master, slave = pty.openpty()
        with contextlib.suppress(OSError):
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        os.set_blocking(master, False)
        try:
            process = await asyncio.create_subprocess_exec(
                # A session of its own with the pty as its controlling terminal, as a login has: lxc-attach (and a
                # shell's job control) wait on it otherwise, and a hang-up of the session reaches the shell.
                "setsid",
                "--ctty",
                *argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env={**os.environ, "TERM": "xterm"},
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        return cls(process, master)

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: every process on the terminal has closed it
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.master)
        self._output.put_nowait(data)

    async def read(self) -> bytes:
        if self._closed:
            return b""
        return await self._output.get()

    async def write(self, data: bytes) -> None:
        if self._closed:
            return
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.master, view)
            except BlockingIOError:
                await asyncio.sleep(0.01)
                continue
            view = view[written:]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(self.master)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGHUP)
        try:
            await asyncio.wait_for(self.process.wait(), 2)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            await self.process.wait()
        os.close(self.master)
        self._output.put_nowait(b"")


class SimulatedTerminal:
    """The simulator's console: a line-editing shell that runs nothing and says so. It answers `hostname`, `echo`,
    `whoami` and `exit` as a shell would, so a client (or a test) sees a round trip through the WebSocket."""

    PROMPT = b"root@{host}:~# "

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self._output: asyncio.Queue[bytes] = asyncio.Queue()
        self._line = bytearray()
        self._closed = False
        banner = (
            f"Cloudplane simulator: {hostname} is a simulated server; this shell runs no command for real.\r\n"
        ).encode()
        self._output.put_nowait(banner + self._prompt())

    def _prompt(self) -> bytes:
        return self.PROMPT.replace(b"{host}", self.hostname.encode())

    def _answer(self, command: str) -> str | None:
        name, _, rest = command.strip().partition(" ")
        if not name:
            return ""
        if name == "hostname":
            return self.hostname
        if name == "whoami":
            return "root"
        if name == "echo":
            try:  # quotes go, as a shell's would
                return " ".join(shlex.split(rest))
            except ValueError:
                return rest
        if name == "exit":
            return None
        return f"{name}: simulated server, nothing was run"

    async def read(self) -> bytes:
        return await self._output.get() if not self._closed or not self._output.empty() else b""

    async def write(self, data: bytes) -> None:
        for byte in data:
            if self._closed:
                return
            if byte in (13, 10):  # Enter
                answer = self._answer(self._line.decode(errors="replace"))
                self._line.clear()
                if answer is None:
                    self._output.put_nowait(b"\r\nlogout\r\n")
                    await self.close()
                    return
                self._output.put_nowait(b"\r\n" + (answer.encode() + b"\r\n" if answer else b"") + self._prompt())
            elif byte in (8, 127):  # Backspace
                if self._line:
                    self._line.pop()
                    self._output.put_nowait(b"\b \b")
            elif byte >= 32:
                self._line.append(byte)
                self._output.put_nowait(bytes([byte]))  # the echo a terminal shows

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._output.put_nowait(b"")
