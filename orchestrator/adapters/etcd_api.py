"""etcd's v3 JSON gateway over mTLS (httpx): members, learners, status, health, alarms,
leadership. Returns our own small types; IDs are ints here (decimal strings on the wire).

The control machine talks to each member's client URL with its own client cert
(`etcd-deploy-client`, O=system:masters) and verifies the server against the cluster CA.
How the bytes get there (straight, or through SSH) is the `network` given: an httpcore
network backend (`member_links.MemberLinks`).
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import httpcore
import httpx

from orchestrator.core.cluster_view import Member, MemberStatus
from orchestrator.core.errors import ClusterUnhealthy, EtcdDeployError

# Answers after which a membership call may be retried (REFERENCE.md section 2).
TRANSIENT = (
    "unhealthy cluster",
    "too many requests",
    "request timed out",
    "leader changed",
    "no leader",
    "can only promote a learner member which is in sync with leader",
    "member not found",
    "timeout",
)


class EtcdApiError(EtcdDeployError):
    """An error answer from etcd, or no answer at all."""

    def __init__(self, endpoint: str, message: str, *, unreachable: bool = False) -> None:
        self.endpoint = endpoint
        self.reason = message
        self.unreachable = unreachable
        if unreachable:
            self.exit_code = ClusterUnhealthy.exit_code  # from here, the cluster is not there
            super().__init__(f"etcd at {endpoint} does not answer: {message}")
        else:
            super().__init__(f"{endpoint}: {message}")

    @property
    def transient(self) -> bool:
        return self.unreachable or any(t in self.reason.lower() for t in TRANSIENT)


def _member(raw: dict[str, Any]) -> Member:
    return Member(
        id=int(raw["ID"]),
        name=raw.get("name", ""),
        peer_urls=tuple(raw.get("peerURLs", ())),
        client_urls=tuple(raw.get("clientURLs", ())),
        is_learner=bool(raw.get("isLearner", False)),
    )


class EtcdClient:
    """A client for one cluster; each call names the endpoint or tries them in order."""

    def __init__(
        self,
        endpoints: list[str],
        *,
        ca: Path,
        cert: Path,
        key: Path,
        timeout: float = 5.0,
        network: httpcore.NetworkBackend | None = None,
    ) -> None:
        self.endpoints = list(endpoints)
        context = ssl.create_default_context(cafile=str(ca))
        context.load_cert_chain(str(cert), str(key))
        transport = httpx.HTTPTransport(verify=context)
        if network is not None:
            # httpx takes no network backend of its own: its transport's pool is replaced
            # by one that has ours (same TLS context and limits; httpx is pinned below
            # 0.29). An explicit transport also means no HTTPS_PROXY from the environment:
            # etcd's mTLS traffic never goes through a web proxy.
            transport._pool = httpcore.ConnectionPool(
                ssl_context=context,
                max_connections=100,  # httpx's own defaults
                max_keepalive_connections=20,
                keepalive_expiry=5.0,
                network_backend=network,
            )
        self._http = httpx.Client(transport=transport, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def peer_serving(self, peer_url: str, timeout: float) -> bool:
        """Whether the member at `peer_url` answers on its peer port (GET /members, what a
        starting member asks its peers)."""
        try:
            return self._http.get(peer_url + "/members", timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    def _post(
        self,
        endpoint: str,
        path: str,
        body: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        try:
            response = self._http.post(
                endpoint + path, json=body or {}, timeout=timeout or httpx.USE_CLIENT_DEFAULT
            )
        except httpx.HTTPError as exc:
            raise EtcdApiError(
                endpoint, f"{exc.__class__.__name__}: {exc}".rstrip(": "), unreachable=True
            ) from None
        data = _json(response)
        if response.status_code != 200 or "error" in data:
            message = data.get("message") or data.get("error") or response.text.strip()
            raise EtcdApiError(endpoint, f"{message} (HTTP {response.status_code})")
        return data

    def _any(
        self,
        path: str,
        body: dict[str, Any] | None = None,
        endpoints: list[str] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """POST to the first endpoint that answers (errors from etcd itself are final)."""
        last: EtcdApiError | None = None
        for endpoint in endpoints or self.endpoints:
            try:
                return self._post(endpoint, path, body, timeout)
            except EtcdApiError as exc:
                if not exc.unreachable:
                    raise
                last = exc
        raise last or EtcdApiError("cluster", "no endpoints", unreachable=True)

    # -- membership ---------------------------------------------------------------------------
    def members(self, endpoints: list[str] | None = None) -> list[Member]:
        data = self._any("/v3/cluster/member/list", {"linearizable": True}, endpoints)
        return [_member(m) for m in data.get("members", [])]

    def add_learner(self, peer_urls: list[str], endpoints: list[str] | None = None) -> Member:
        data = self._any(
            "/v3/cluster/member/add",
            {"peerURLs": peer_urls, "isLearner": True},
            endpoints,
            timeout=15,
        )
        return _member(data["member"])

    def promote(self, member_id: int, endpoints: list[str] | None = None) -> None:
        self._any("/v3/cluster/member/promote", {"ID": str(member_id)}, endpoints, timeout=15)

    def remove(self, member_id: int, endpoints: list[str] | None = None) -> None:
        self._any("/v3/cluster/member/remove", {"ID": str(member_id)}, endpoints, timeout=15)

    # -- per-member state ----------------------------------------------------------------------
    def status(self, endpoint: str, timeout: float | None = None) -> MemberStatus:
        data = self._post(endpoint, "/v3/maintenance/status", timeout=timeout)
        header = data.get("header", {})
        return MemberStatus(
            endpoint=endpoint,
            member_id=int(header.get("member_id", 0)),
            cluster_id=int(header.get("cluster_id", 0)),
            revision=int(header.get("revision", 0)),
            leader_id=int(data.get("leader", 0)),
            version=data.get("version", ""),
            db_size=int(data.get("dbSize", 0)),
            db_size_in_use=int(data.get("dbSizeInUse", 0)),
            raft_term=int(data.get("raftTerm", 0)),
            raft_index=int(data.get("raftIndex", 0)),
            raft_applied_index=int(data.get("raftAppliedIndex", 0)),
            is_learner=bool(data.get("isLearner", False)),
            errors=tuple(data.get("errors", ())),
        )

    def health(self, endpoint: str, timeout: float | None = None) -> tuple[bool, str]:
        """etcd's own /health: a linearizable check through the leader."""
        try:
            response = self._http.get(
                endpoint + "/health", timeout=timeout or httpx.USE_CLIENT_DEFAULT
            )
        except httpx.HTTPError as exc:
            return False, f"unreachable ({exc.__class__.__name__})"
        data = _json(response)
        healthy = str(data.get("health", "")).lower() == "true"
        return healthy, data.get("reason", "") or ("" if healthy else response.text.strip()[:200])

    def alarms(self, endpoints: list[str] | None = None) -> list[tuple[int, str]]:
        data = self._any("/v3/maintenance/alarm", {"action": "GET"}, endpoints)
        return [(int(a.get("memberID", 0)), a.get("alarm", "NONE")) for a in data.get("alarms", [])]

    def defragment(self, endpoint: str, timeout: float = 600) -> None:
        """Defragment one member (it blocks reads and writes on that member meanwhile)."""
        self._post(endpoint, "/v3/maintenance/defragment", timeout=timeout)

    def disarm(self, member_id: int, alarm: str, endpoints: list[str] | None = None) -> None:
        self._any(
            "/v3/maintenance/alarm",
            {"action": "DEACTIVATE", "memberID": str(member_id), "alarm": alarm},
            endpoints,
        )

    def move_leader(self, leader_endpoint: str, target_id: int) -> None:
        self._post(
            leader_endpoint,
            "/v3/maintenance/transfer-leadership",
            {"targetID": str(target_id)},
            timeout=15,
        )

    def snapshot(
        self, endpoint: str, out: BinaryIO, progress: Callable[[int], None] | None = None
    ) -> int:
        """Stream a snapshot of `endpoint`'s database into `out`; returns the byte count.

        The gateway streams one JSON object per line, each with a base64 `blob`.
        """
        written = 0
        try:
            with self._http.stream(
                "POST", endpoint + "/v3/maintenance/snapshot", json={}, timeout=httpx.Timeout(30)
            ) as response:
                if response.status_code != 200:
                    response.read()
                    raise EtcdApiError(endpoint, f"snapshot failed: {response.text.strip()}")
                for line in response.iter_lines():
                    if not line.strip():
                        continue
                    message = json.loads(line)
                    if "error" in message:
                        error = message["error"]
                        raise EtcdApiError(
                            endpoint, f"snapshot failed: {error.get('message', error)}"
                        )
                    blob = base64.b64decode(message.get("result", message).get("blob", ""))
                    out.write(blob)
                    written += len(blob)
                    if progress:
                        progress(written)
        except httpx.HTTPError as exc:
            raise EtcdApiError(
                endpoint, f"snapshot stream broke: {exc}", unreachable=True
            ) from None
        return written

    def count_keys(self, endpoint: str) -> tuple[int, int]:
        """(number of keys, revision) as `endpoint` sees them now."""
        data = self._post(
            endpoint, "/v3/kv/range", {"key": "AA==", "range_end": "AA==", "count_only": True}
        )
        return int(data.get("count", 0)), int(data.get("header", {}).get("revision", 0))


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
