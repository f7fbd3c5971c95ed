"""Serving the simulator with uvicorn on a background thread, over a socket bound here, optionally TLS.

Binding the socket before the thread starts is what makes ``port=0`` usable: the port is
known as soon as :meth:`BackgroundServer.start` returns. Stopping joins the thread, cancels
callback deliveries and closes the socket, so start/stop cycles leak nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import logging
import shutil
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any

import uvicorn

from airflow_provider_nyne.testing.simulator.app import SimulatorApp

log = logging.getLogger("airflow_provider_nyne.testing.simulator")


def write_tls_files(directory: Path, host: str) -> tuple[Path, Path, Path]:
    """Write a throwaway CA and a server certificate for ``host``, ``localhost`` and ``127.0.0.1``.

    The real API is only reachable over HTTPS, so the client's TLS path deserves the same tests
    as its plain one. Keys never leave ``directory`` and are valid for one day.

    :param directory: where to write them.
    :param host: the address the simulator binds (an IP address or a host name).
    :returns: the files ``ca.pem``, ``server.pem`` and ``server-key.pem``.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def certificate(name: str, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Nyne simulator test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    usage = dict.fromkeys(
        ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement"),
        False,
    )
    ca_cert = (
        certificate("Nyne simulator test CA", ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                **usage, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    try:
        address: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        address = x509.DNSName(host)
    if address not in names:
        names.append(address)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        certificate("Nyne simulator", key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    ca_file, cert_file, key_file = (
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server-key.pem",
    )
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.touch(mode=0o600)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ca_file, cert_file, key_file


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
        if self._loop is not None and self._wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                self._loop.call_soon_threadsafe(self._wake.set)


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
    :param loop: event loop: ``auto`` (uvloop when installed), ``uvloop`` or ``asyncio``.
    :param uvicorn_options: ``log_level``, ``access_log``, ``http``, ``timeout_keep_alive`` and ``backlog``.
    """

    def __init__(self, host: str, port: int, *, tls: bool, loop: str, **uvicorn_options: Any) -> None:
        self.host, self.tls = host, tls
        self._requested_port, self._loop_kind, self._options = port, loop, uvicorn_options
        self.port: int | None = None
        #: The CA file to trust, while a TLS server runs.
        self.ca_file: Path | None = None
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
        """Bind the socket and serve ``app`` on a background thread, waiting ``timeout`` seconds for it."""
        with self._lifecycle:
            if self._thread is not None:
                raise RuntimeError("the simulator is already started")
            sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
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
                self.ca_file, cert_file, key_file = write_tls_files(
                    Path(tempfile.mkdtemp(prefix="nyne-simulator-tls-")), self.host
                )
                tls_options = {"ssl_certfile": str(cert_file), "ssl_keyfile": str(key_file)}
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
        app.completions.bind(asyncio.get_running_loop())
        try:
            await server.serve(sockets=[sock])
        finally:
            await app.completions.aclose()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving, join the thread (forcing it after ``timeout`` seconds) and close the socket."""
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
            if self.ca_file is not None:
                shutil.rmtree(self.ca_file.parent, ignore_errors=True)
                self.ca_file = None
            self._thread = self._server = self._socket = None
            if thread.is_alive():
                raise RuntimeError("the simulator thread did not stop")
