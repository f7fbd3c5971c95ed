"""Serving the simulator's ASGI app with uvicorn on a background thread, over a socket bound here.

Binding the socket before the thread starts is what makes ``port=0`` usable: the port is
known as soon as :meth:`BackgroundServer.start` returns. Stopping joins the thread, cancels
callback deliveries and closes the socket, so start/stop cycles leak nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any

import uvicorn

from airflow_provider_nyne.testing.simulator.app import SimulatorApp
from airflow_provider_nyne.testing.simulator.tls import TlsFiles, write_tls_files

__all__ = ["BackgroundServer"]

log = logging.getLogger("airflow_provider_nyne.testing.simulator")


class _Server(uvicorn.Server):
    """uvicorn server that reports when it is listening and stops as soon as asked."""

    def __init__(self, config: uvicorn.Config, ready: threading.Event) -> None:
        super().__init__(config)
        self._ready = ready
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        await super().startup(sockets=sockets)
        self._ready.set()

    async def main_loop(self) -> None:
        # uvicorn's own loop polls should_exit every 0.1 s; waking on request makes stop() fast.
        assert self._wake is not None
        should_exit = await self.on_tick(0)
        while not should_exit:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)
            # A tick count that is a multiple of 10 refreshes the Date header.
            should_exit = await self.on_tick(0)

    def request_exit(self) -> None:
        """Ask the server to stop; safe from any thread."""
        self.should_exit = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(wake.set)


def _new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class BackgroundServer:
    """One uvicorn server on a daemon thread; can be started again after it stopped.

    :param host: address to bind.
    :param port: port to bind; 0 picks a free one.
    :param tls: serve HTTPS with a certificate from a throwaway CA made at each start.
    :param uvicorn_options: ``log_level``, ``access_log``, ``http``, ``timeout_keep_alive``
        and ``backlog``, passed to ``uvicorn.Config``.
    :param loop: event loop: ``auto`` (uvloop when installed), ``uvloop`` or ``asyncio``.
    """

    def __init__(self, host: str, port: int, *, tls: bool, loop: str, **uvicorn_options: Any) -> None:
        self.host = host
        self.tls = tls
        self._requested_port = port
        self._loop_kind = loop
        self._options = uvicorn_options
        self.port: int | None = None
        self.tls_files: TlsFiles | None = None
        self._thread: threading.Thread | None = None
        self._server: _Server | None = None
        self._socket: socket.socket | None = None
        self._error: BaseException | None = None
        self._lifecycle = threading.Lock()

    @property
    def running(self) -> bool:
        """Whether the server thread is serving."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def started(self) -> bool:
        """Whether :meth:`start` ran and :meth:`stop` has not."""
        return self._thread is not None

    def start(self, app: SimulatorApp, timeout: float = 10.0) -> None:
        """Bind the socket and serve ``app`` on a background thread.

        :param app: the application to serve.
        :param timeout: seconds to wait for the server to listen.
        """
        with self._lifecycle:
            if self._thread is not None:
                raise RuntimeError("the simulator is already started")
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((self.host, self._requested_port))
                sock.listen(self._options.get("backlog", 2048))
            except OSError:
                sock.close()
                raise
            self._socket = sock
            self.port = sock.getsockname()[1]
            tls_options: dict[str, Any] = {}
            if self.tls:
                self.tls_files = write_tls_files(
                    Path(tempfile.mkdtemp(prefix="nyne-simulator-tls-")), self.host
                )
                tls_options = {
                    "ssl_certfile": str(self.tls_files.cert_file),
                    "ssl_keyfile": str(self.tls_files.key_file),
                }
            config = uvicorn.Config(
                app,
                lifespan="off",
                log_config=None,
                proxy_headers=False,
                server_header=False,
                timeout_graceful_shutdown=1,
                **self._options,
                **tls_options,
            )
            ready = threading.Event()
            self._server = _Server(config, ready)
            self._error = None
            self._thread = threading.Thread(
                target=self._run,
                args=(self._server, sock, ready),
                name=f"nyne-simulator-{self.port}",
                daemon=True,
            )
            self._thread.start()
        if not ready.wait(timeout) or self._error is not None:
            error = self._error
            self.stop()
            raise RuntimeError(f"the simulator did not start: {error!r}") from error

    def _run(self, server: _Server, sock: socket.socket, ready: threading.Event) -> None:
        loop = _new_event_loop(self._loop_kind)
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(server, sock))
        except BaseException as exc:  # reported by start() or stop()
            self._error = exc
            log.exception("Nyne simulator stopped with an error")
        finally:
            try:
                pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()
                ready.set()

    async def _serve(self, server: _Server, sock: socket.socket) -> None:
        app = server.config.app
        assert isinstance(app, SimulatorApp)
        app.bind(asyncio.get_running_loop())
        try:
            await server.serve(sockets=[sock])
        finally:
            await app.aclose()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving, join the thread and close the socket (no-op when not started).

        :param timeout: seconds to wait for a graceful stop before forcing it.
        """
        with self._lifecycle:
            thread, server, sock = self._thread, self._server, self._socket
            if thread is None or server is None:
                return
            server.request_exit()
            thread.join(timeout)
            if thread.is_alive():
                server.force_exit = True
                thread.join(timeout)
            if sock is not None:
                sock.close()
            if self.tls_files is not None:
                shutil.rmtree(self.tls_files.ca_file.parent, ignore_errors=True)
                self.tls_files = None
            self._thread = self._server = self._socket = None
            if thread.is_alive():
                raise RuntimeError("the simulator thread did not stop")
