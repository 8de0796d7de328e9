"""The bastion's Kubernetes API client, for one session's credential.

aiohttp with TLS verified against the cluster's pinned CA (``clusters[].ca_file``); plain
HTTP is refused; the bearer token comes from a :class:`bastion.vault.KubeToken` and is put
only in the request header, never in a URL, a log line or an error. Raw JSON in and out:
the official client's model objects cost about 0.5 ms a pod to build (TOOLS.md) and add
nothing here.

Every failure is one sentence for the operator (BackendUnavailable or PolicyDenied), with a
hint for the administrator.
"""

from __future__ import annotations

import re
import ssl
from typing import Any
from urllib.parse import quote

import aiohttp

from bastion.config.models import Cluster
from bastion.errors import BackendUnavailable, PolicyDenied
from bastion.vault import KubeToken

__all__ = ["KubeApi"]

_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


class KubeApi:
    """Requests to one cluster with one session's token. Use ``async with``."""

    def __init__(self, cluster: Cluster, token: KubeToken, *, timeout: float = 10.0) -> None:
        if not cluster.api_url.startswith("https://"):
            raise BackendUnavailable(
                f"cluster {cluster.name}'s API address is not https://; the bastion refuses "
                "plain HTTP",
                hint="set clusters[].api_url to the API server's https:// address",
            )
        self._cluster = cluster
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> KubeApi:
        context = ssl.create_default_context(cafile=str(self._cluster.ca_file))
        self._session = aiohttp.ClientSession(
            base_url=self._cluster.api_url,
            connector=aiohttp.TCPConnector(ssl=context),
            timeout=self._timeout,
            trust_env=False,  # no proxy or CA bundle from the environment
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        for value, what in ((namespace, "namespace"), (name, "pod")):
            if not _NAME.fullmatch(value):
                raise PolicyDenied(f"{value!r} is not a valid {what} name")
        path = f"/api/v1/namespaces/{quote(namespace)}/pods/{quote(name)}"
        return await self._get(path, f"read pod {namespace}/{name}")

    async def _get(self, path: str, doing: str) -> dict[str, Any]:
        if self._session is None:
            raise RuntimeError("KubeApi is used outside 'async with'")
        cluster = self._cluster.name
        headers = {"Authorization": f"Bearer {self._token.reveal()}", "Accept": "application/json"}
        try:
            async with self._session.get(path, headers=headers, allow_redirects=False) as answer:
                status = answer.status
                body: Any = await answer.json(content_type=None) if status < 500 else None
        except (aiohttp.ClientSSLError, ssl.SSLError):
            raise BackendUnavailable(
                f"could not {doing}: cluster {cluster}'s API certificate is not signed by its "
                "configured CA",
                hint=f"check clusters[{cluster}].ca_file",
            ) from None
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise BackendUnavailable(
                f"could not {doing}: cluster {cluster}'s API did not answer ({type(exc).__name__})",
                hint="check that the API server is up and reachable from the bastion",
            ) from None
        if status == 200 and isinstance(body, dict):
            return body
        message = body.get("message", "") if isinstance(body, dict) else ""
        if status == 404:
            raise PolicyDenied(f"could not {doing}: it does not exist (any more)")
        if status in (401, 403):
            raise BackendUnavailable(
                f"could not {doing}: the session's credential was refused ({status})",
                hint="the Vault role's Kubernetes rules must allow what debug sessions need "
                "(bastion.kube_permissions); " + message[:200],
            )
        raise BackendUnavailable(
            f"could not {doing}: cluster {cluster}'s API answered {status}",
            hint=message[:200] or "see the API server's logs",
        )
