"""A real S3-protocol server for tests: moto in *server mode* on 127.0.0.1.

Nothing is mocked in-process: the server is a separate process speaking HTTP
on a free local port, and every client (boto3, pyarrow, delta-rs, Airflow's
S3Hook) talks to it over the network exactly as it would to MinIO or AWS.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

#: Throwaway credentials for the local test server only (moto accepts any).
TEST_KEY_ID = "neurocyte-test"
TEST_SECRET = "neurocyte-test-secret"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class S3Server:
    """A running moto server: its endpoint and the env that points clients at it."""

    endpoint: str
    process: subprocess.Popen[bytes]

    def env(self) -> dict[str, str]:
        """The standard ``AWS_*`` variables for clients of this server."""
        return {
            "AWS_ACCESS_KEY_ID": TEST_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": TEST_SECRET,
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
        }

    def client(self):  # boto3 S3 client
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=TEST_KEY_ID,
            aws_secret_access_key=TEST_SECRET,
            region_name="us-east-1",
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def upload(self, local: Path, uri: str) -> None:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        self.client().upload_file(str(local), bucket, key)


@contextmanager
def moto_server(*, log: Path | None = None) -> Iterator[S3Server]:
    """Start ``moto.server`` on a free port; stop it (by its pid) on exit."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {proc.returncode}")
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start in 30 s") from None
                time.sleep(0.1)
        yield S3Server(endpoint=endpoint, process=proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log:
            out.close()  # type: ignore[union-attr]
