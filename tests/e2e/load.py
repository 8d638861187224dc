"""A load checker: a writer that writes sequential keys without pause through etcd's client
API (retrying a write on the next endpoint, as etcd clients do, until it is acknowledged),
recording every acknowledged write, and a verifier that reads them all back."""

from __future__ import annotations

import base64
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx


def _b64(data: str) -> str:
    return base64.b64encode(data.encode()).decode()


@dataclass
class LoadReport:
    acknowledged: int
    lost: list[str]
    longest_stall: float  # seconds between two acknowledged writes


@dataclass
class Writer:
    endpoints: list[str]
    pki_dir: Path  # the state dir's pki folder: ca.crt and the control client cert
    prefix: str = "/load/"
    acked: list[int] = field(default_factory=list)
    longest_stall: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _client(self) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(self.pki_dir / "ca.crt"))
        context.load_cert_chain(
            str(self.pki_dir / "etcd-deploy-client.crt"),
            str(self.pki_dir / "etcd-deploy-client.key"),
        )
        return httpx.Client(verify=context, timeout=2.0)

    def _run(self) -> None:
        seq = 0
        turn = 0
        last_ack = time.monotonic()
        with self._client() as client:
            while not self._stop.is_set():
                endpoint = self.endpoints[turn % len(self.endpoints)]
                key = f"{self.prefix}{seq:08d}"
                try:
                    response = client.post(
                        f"{endpoint}/v3/kv/put", json={"key": _b64(key), "value": _b64(f"v{seq}")}
                    )
                    ok = response.status_code == 200 and "error" not in response.json()
                except (httpx.HTTPError, ValueError):
                    ok = False
                if ok:
                    now = time.monotonic()
                    self.longest_stall = max(self.longest_stall, now - last_ack)
                    last_ack = now
                    self.acked.append(seq)
                    seq += 1
                else:
                    turn += 1  # the same write again, on the next endpoint
                    time.sleep(0.05)

    def start(self) -> Writer:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)

    def verify(self, endpoint: str) -> LoadReport:
        """Read every acknowledged key back from the cluster (linearizable range)."""
        found = read_prefix(endpoint, self.pki_dir, self.prefix)
        lost = [
            f"{self.prefix}{seq:08d}"
            for seq in self.acked
            if found.get(f"{self.prefix}{seq:08d}") != f"v{seq}"
        ]
        return LoadReport(len(self.acked), lost, round(self.longest_stall, 2))


def client_for(pki_dir: Path, timeout: float = 5.0) -> httpx.Client:
    """An httpx client with the control machine's etcd client cert."""
    context = ssl.create_default_context(cafile=str(pki_dir / "ca.crt"))
    context.load_cert_chain(
        str(pki_dir / "etcd-deploy-client.crt"), str(pki_dir / "etcd-deploy-client.key")
    )
    return httpx.Client(verify=context, timeout=timeout)


def put_keys(endpoint: str, pki_dir: Path, count: int, prefix: str = "/keys/") -> None:
    with client_for(pki_dir) as client:
        for i in range(count):
            response = client.post(
                f"{endpoint}/v3/kv/put",
                json={"key": _b64(f"{prefix}{i:05d}"), "value": _b64(f"value-{i}")},
            )
            response.raise_for_status()


def read_prefix(endpoint: str, pki_dir: Path, prefix: str) -> dict[str, str]:
    prefix_end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    with client_for(pki_dir, timeout=30) as client:
        response = client.post(
            f"{endpoint}/v3/kv/range", json={"key": _b64(prefix), "range_end": _b64(prefix_end)}
        )
        response.raise_for_status()
        return {
            base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode()
            for kv in response.json().get("kvs", [])
        }


@dataclass
class DownSampler:
    """Samples, every 50 ms, how many of `endpoints` do not answer a status call."""

    endpoints: list[str]
    pki_dir: Path
    most_down: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        # A member slower than 2 s counts as down: with less, a member of the busy 2-core lab
        # that answers late (while another one unpacks an upgrade, say) would count as down.
        with client_for(self.pki_dir, timeout=2.0) as client:
            while not self._stop.is_set():
                down = 0
                for endpoint in self.endpoints:
                    try:
                        client.post(f"{endpoint}/v3/maintenance/status", json={}).raise_for_status()
                    except httpx.HTTPError:
                        down += 1
                self.most_down = max(self.most_down, down)
                self.samples += 1
                time.sleep(0.05)

    def __enter__(self) -> DownSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
