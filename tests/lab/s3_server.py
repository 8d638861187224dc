"""The lab's S3-compatible object store: moto's standalone server, a real HTTP endpoint any
S3 client reaches over the network (buckets in memory, gone when it stops)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3

ACCESS_KEY = "lab-access-key-id-7f3a"  # moto accepts any; distinctive, to grep logs for it
SECRET_KEY = "lab-secret-access-key-c0ffee-do-not-log"
REGION = "eu-west-1"


class S3Server:
    """`moto_server` on 127.0.0.1 at a free port: `start()`, `endpoint`, `stop()`."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.endpoint = ""

    def start(self, timeout: float = 30) -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        moto = Path(sys.executable).with_name("moto_server")
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out
            )
        self.endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2):
                    return self.endpoint
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"moto_server did not start: {self.log.read_text()[-2000:]}"
                    ) from None
                time.sleep(0.2)

    def env(self) -> dict[str, str]:
        """What an operator's shell would export for this store."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
        }

    def client(self):  # type: ignore[no-untyped-def]
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
