"""A local BigQuery for tests: the bqemulator process plus a TLS front for its gRPC port.

``.ci/bigquery/setup.sh`` installs (and patches) bqemulator into ``.venv-bqemu/``. This module
starts it on free loopback ports with ``--ephemeral`` (in-memory, nothing left on disk) and puts
a TLS proxy in front of its gRPC port: the spark-bigquery-connector always dials the Storage
Read/Write API over TLS, while bqemulator serves plaintext gRPC (pointing the connector at the
plaintext port makes Spark tasks hang in gax retries). The proxy's self-signed certificate
(``localhost`` / ``127.0.0.1``) is put in a PKCS12 truststore that the JVM is told to trust with
:attr:`BigQueryEmulator.truststore_java_options`.

Only the standard library is imported at module level (``client()`` imports
google-cloud-bigquery), so pytest can import this file in any environment.

    with BigQueryEmulator(project="test-project") as bq:
        bq.client().create_dataset("ds")
        df.write.format("bigquery").options(**bq.connector_options()).save("test-project.ds.t")
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[2]
BQEMU_VENV = Path(os.environ.get("RECSYS_BQEMU_VENV", REPO / ".venv-bqemu"))
BQEMULATOR = BQEMU_VENV / "bin" / "bqemulator"
TRUSTSTORE_PASSWORD = "changeit"
DUMMY_ACCESS_TOKEN = "dummy-token-for-bqemulator"  # the emulator does not check auth


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keytool() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "keytool").is_file():
        return str(Path(java_home) / "bin" / "keytool")
    found = shutil.which("keytool")
    if found:
        return found
    java = shutil.which("java")
    if java:  # e.g. /usr/bin/java -> /usr/lib/jvm/<jdk>/bin/java
        candidate = Path(os.path.realpath(java)).parent / "keytool"
        if candidate.is_file():
            return str(candidate)
    raise RuntimeError("keytool not found (it ships with the JDK/JRE); set JAVA_HOME")


def make_tls_material(folder: Path) -> tuple[Path, Path, Path]:
    """Self-signed cert + key for localhost/127.0.0.1 (openssl) and a PKCS12 truststore holding
    the JDK's default CAs plus that cert (keytool). Returns (cert.pem, key.pem, truststore.p12)."""
    cert, key, store = folder / "cert.pem", folder / "key.pem", folder / "truststore.p12"
    openssl = shutil.which("openssl")
    if not openssl:
        raise RuntimeError("openssl not found; it is needed to make the TLS proxy's certificate")
    _run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "7",
          "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
          "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
          "-addext", "basicConstraints=critical,CA:TRUE"])
    keytool = _keytool()
    # -Djavax.net.ssl.trustStore *replaces* the JVM's default CAs, and the same JVM must still
    # reach https://repo1.maven.org (Ivy fetches spark.jars.packages in the driver JVM): start
    # from a copy of the JDK's cacerts, then add the proxy's certificate.
    cacerts = Path(os.path.realpath(keytool)).parent.parent / "lib" / "security" / "cacerts"
    if cacerts.is_file():
        _run([keytool, "-importkeystore", "-noprompt", "-srckeystore", str(cacerts),
              "-srcstorepass", "changeit", "-destkeystore", str(store), "-deststoretype", "PKCS12",
              "-deststorepass", TRUSTSTORE_PASSWORD])
    _run([keytool, "-importcert", "-noprompt", "-alias", "bqemulator-tls-proxy", "-file", str(cert),
          "-keystore", str(store), "-storetype", "PKCS12", "-storepass", TRUSTSTORE_PASSWORD])
    return cert, key, store


def _run(cmd):
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")


class TlsProxy:
    """TLS (ALPN h2) on 127.0.0.1:<listen_port> -> plaintext TCP 127.0.0.1:<target_port>, run by an
    asyncio loop in a daemon thread of this process (so it can never outlive the tests)."""

    def __init__(self, listen_port: int, target_port: int, cert: Path, key: Path):
        self.listen_port, self.target_port = listen_port, target_port
        self._ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ctx.load_cert_chain(str(cert), str(key))
        self._ctx.set_alpn_protocols(["h2"])
        self._loop = asyncio.new_event_loop()
        self._server: Optional[asyncio.base_events.Server] = None
        self._thread: Optional[threading.Thread] = None

    def start(self, timeout: float = 10.0) -> None:
        started = threading.Event()
        errors: list = []

        def run():
            asyncio.set_event_loop(self._loop)
            try:
                self._server = self._loop.run_until_complete(asyncio.start_server(
                    self._handle, "127.0.0.1", self.listen_port, ssl=self._ctx))
            except Exception as exc:  # noqa: BLE001 - reported to start()
                errors.append(exc)
                started.set()
                return
            started.set()
            self._loop.run_forever()
            # stopped: close the listener and every open connection
            self._server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

        self._thread = threading.Thread(target=run, name="bqemulator-tls-proxy", daemon=True)
        self._thread.start()
        if not started.wait(timeout):
            raise RuntimeError("TLS proxy did not start")
        if errors:
            raise RuntimeError(f"TLS proxy failed to listen on {self.listen_port}: {errors[0]}")

    async def _handle(self, client_r, client_w):
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(self._pipe(client_r, up_w), self._pipe(up_r, client_w))

    @staticmethod
    async def _pipe(reader, writer):
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError, ssl.SSLError):
            pass
        finally:
            try:
                writer.close()
            except Exception:  # noqa: BLE001
                pass

    def stop(self) -> None:
        if self._thread and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._thread = None


class BigQueryEmulator:
    """The patched bqemulator from ``.venv-bqemu`` on free loopback ports, plus the TLS proxy.

    Use as a context manager, or call :meth:`start` / :meth:`stop` (also run at interpreter exit).
    """

    def __init__(self, project: str = "test-project", startup_timeout: float = 90.0):
        self.project = project
        self.startup_timeout = startup_timeout
        self.rest_port = self.grpc_port = self.tls_port = 0
        self._proc: Optional[subprocess.Popen] = None
        self._proxy: Optional[TlsProxy] = None
        self._tmp: Optional[Path] = None
        self._log_file = None
        self.truststore: Optional[Path] = None

    # ------------------------------------------------------------------ endpoints and options
    @property
    def rest_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc_endpoint(self) -> str:
        """The TLS proxy (``localhost``, as in the certificate); the connector's Storage endpoint."""
        return f"localhost:{self.tls_port}"

    @property
    def plaintext_grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def log_path(self) -> Optional[Path]:
        return self._tmp / "bqemulator.log" if self._tmp else None

    @property
    def truststore_java_options(self) -> str:
        """JVM flags that make the driver (and, on a cluster, executors) trust the proxy."""
        return (f"-Djavax.net.ssl.trustStore={self.truststore} "
                f"-Djavax.net.ssl.trustStorePassword={TRUSTSTORE_PASSWORD} "
                "-Djavax.net.ssl.trustStoreType=PKCS12")

    def connector_options(self) -> dict:
        """spark-bigquery-connector options that point it at this emulator, with no Google
        credential lookup (``gcpAccessToken`` is any string: the emulator does not check it)."""
        return {
            "parentProject": self.project,
            "project": self.project,
            "bigQueryHttpEndpoint": self.rest_endpoint,
            "bigQueryStorageGrpcEndpoint": self.grpc_endpoint,
            "gcpAccessToken": DUMMY_ACCESS_TOKEN,
        }

    def client(self):
        """A google-cloud-bigquery Client for this emulator (anonymous credentials)."""
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        return bigquery.Client(project=self.project, credentials=AnonymousCredentials(),
                               client_options=ClientOptions(api_endpoint=self.rest_endpoint))

    # ------------------------------------------------------------------ life cycle
    def start(self) -> "BigQueryEmulator":
        if self._proc is not None:
            return self
        if not BQEMULATOR.is_file():
            raise RuntimeError(f"{BQEMULATOR} not found: run `bash .ci/bigquery/setup.sh` first")
        atexit.register(self.stop)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="recsys-bqemulator-"))
        cert, key, self.truststore = make_tls_material(self._tmp)
        self.rest_port, self.grpc_port, self.tls_port = _distinct_free_ports(3)
        env = dict(os.environ)
        # DuckDB looks for its extensions under $HOME/.duckdb; setup.sh installed spatial there.
        env["HOME"] = str(BQEMU_VENV / "home")
        env.pop("PYTHONPATH", None)
        self._log_file = open(self.log_path, "wb")
        self._proc = subprocess.Popen(
            [str(BQEMULATOR), "start", "--rest-host", "127.0.0.1", "--rest-port", str(self.rest_port),
             "--grpc-host", "127.0.0.1", "--grpc-port", str(self.grpc_port), "--ephemeral",
             "--project", self.project, "--log-level", "warning", "--log-format", "console"],
            stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)  # own process group: stop() signals every child too
        self._proxy = TlsProxy(self.tls_port, self.grpc_port, cert, key)
        self._proxy.start()
        self._wait_ready()

    def _wait_ready(self) -> None:
        url = f"{self.rest_endpoint}/bigquery/v2/projects/{self.project}/datasets"
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"bqemulator exited with {self._proc.returncode} during start-up:\n"
                                   + self._log_tail())
            if _http_ok(url) and _tcp_open(self.grpc_port):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"bqemulator not ready after {self.startup_timeout:.0f}s:\n"
                                   + self._log_tail())
            time.sleep(0.2)

    def _log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except (OSError, AttributeError):
            return "(no log)"

    def stop(self) -> None:
        """Stop the proxy and the emulator (its whole process group); remove the temp folder."""
        if self._proxy is not None:
            self._proxy.stop()
            self._proxy = None
        proc, self._proc = self._proc, None
        if proc is not None:
            _terminate_group(proc)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        atexit.unregister(self.stop)

    def __enter__(self) -> "BigQueryEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _terminate_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)  # pgid == pid (start_new_session)
        except ProcessLookupError:
            pass
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        # the leader is gone; make sure nothing else is left in its group
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return


def _distinct_free_ports(n: int) -> list:
    ports: list = []
    while len(ports) < n:
        p = free_port()
        if p not in ports:
            ports.append(p)
    return ports


_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http_ok(url: str) -> bool:
    try:
        with _NO_PROXY_OPENER.open(url, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
