"""Deployments in the SDK: ``ws.deployments``, on either transport.

>>> ws.deployments.create("churn-prod", "churn@champion", config={"max_batch_size": 32})
... # doctest: +SKIP
>>> token = ws.deployments.create_token("churn-prod").token  # doctest: +SKIP
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast

from pydantic import TypeAdapter

from modelworks.core.errors import InvalidInput
from modelworks.serving.schemas import DeploymentOut, DeploymentTokenOut
from modelworks.transport import API, HttpClient, PrincipalBound, _seg, protocol_methods

if TYPE_CHECKING:
    from modelworks.client import Workspace
    from modelworks.core.auth import Principal
    from modelworks.core.store import Store

_DEPLOYMENTS = TypeAdapter(list[DeploymentOut])
_TOKENS = TypeAdapter(list[DeploymentTokenOut])


class DeploymentsBackend(Protocol):
    def create(
        self,
        project: str,
        name: str,
        model: str,
        *,
        config: Mapping[str, Any] | None = None,
        description: str = "",
    ) -> DeploymentOut: ...

    def get(self, project: str, name: str) -> DeploymentOut: ...

    def list(self, project: str) -> builtins.list[DeploymentOut]: ...

    def update(
        self,
        project: str,
        name: str,
        *,
        model: str | None = None,
        config: Mapping[str, Any] | None = None,
        description: str | None = None,
        status: str | None = None,
    ) -> DeploymentOut: ...

    def delete(self, project: str, name: str) -> DeploymentOut: ...

    def create_token(
        self, project: str, name: str, label: str = "default"
    ) -> DeploymentTokenOut: ...

    def list_tokens(self, project: str, name: str) -> builtins.list[DeploymentTokenOut]: ...

    def revoke_token(self, project: str, name: str, token_id: str) -> None: ...


class EmbeddedDeployments(PrincipalBound):
    methods = protocol_methods(DeploymentsBackend)

    def __init__(self, store: Store, principal: Principal) -> None:
        from modelworks.serving.service import DeploymentService

        self.service = DeploymentService(store)
        self.principal = principal


def embedded_deployments(store: Store, principal: Principal | None = None) -> DeploymentsBackend:
    from modelworks.core.auth import local_principal

    return cast(DeploymentsBackend, EmbeddedDeployments(store, principal or local_principal()))


class RemoteDeployments:
    def __init__(self, http: HttpClient) -> None:
        self.http = http

    def _d(self, project: str, name: str | None = None) -> str:
        base = f"{API}/projects/{_seg(project)}/deployments"
        return base if name is None else f"{base}/{_seg(name)}"

    def create(
        self,
        project: str,
        name: str,
        model: str,
        *,
        config: Mapping[str, Any] | None = None,
        description: str = "",
    ) -> DeploymentOut:
        body = {"name": name, "model": model, "config": dict(config or {}),
                "description": description}  # fmt: skip
        resp = self.http.request("POST", self._d(project), idempotent=False, json_body=body)
        return DeploymentOut.model_validate_json(resp.content)

    def get(self, project: str, name: str) -> DeploymentOut:
        resp = self.http.request("GET", self._d(project, name), idempotent=True)
        return DeploymentOut.model_validate_json(resp.content)

    def list(self, project: str) -> builtins.list[DeploymentOut]:
        resp = self.http.request("GET", self._d(project), idempotent=True)
        return _DEPLOYMENTS.validate_json(resp.content)

    def update(
        self,
        project: str,
        name: str,
        *,
        model: str | None = None,
        config: Mapping[str, Any] | None = None,
        description: str | None = None,
        status: str | None = None,
    ) -> DeploymentOut:
        body = {"model": model, "config": None if config is None else dict(config),
                "description": description, "status": status}  # fmt: skip
        resp = self.http.request("PATCH", self._d(project, name), idempotent=True, json_body=body)
        return DeploymentOut.model_validate_json(resp.content)

    def delete(self, project: str, name: str) -> DeploymentOut:
        resp = self.http.request("DELETE", self._d(project, name), idempotent=True)
        return DeploymentOut.model_validate_json(resp.content)

    def create_token(self, project: str, name: str, label: str = "default") -> DeploymentTokenOut:
        resp = self.http.request(
            "POST", f"{self._d(project, name)}/tokens", idempotent=False,
            json_body={"name": label},
        )  # fmt: skip
        return DeploymentTokenOut.model_validate_json(resp.content)

    def list_tokens(self, project: str, name: str) -> builtins.list[DeploymentTokenOut]:
        resp = self.http.request("GET", f"{self._d(project, name)}/tokens", idempotent=True)
        return _TOKENS.validate_json(resp.content)

    def revoke_token(self, project: str, name: str, token_id: str) -> None:
        self.http.request(
            "DELETE", f"{self._d(project, name)}/tokens/{_seg(token_id)}", idempotent=True
        )


class Deployments:
    """Deployments of the workspace's project: ``ws.deployments``."""

    def __init__(self, workspace: Workspace, backend: DeploymentsBackend | None) -> None:
        self._ws = workspace
        self._backend = backend

    @property
    def backend(self) -> DeploymentsBackend:
        if self._backend is None:
            raise InvalidInput("This workspace has no deployments backend; use mw.connect().")
        return self._backend

    def create(
        self,
        name: str,
        model: str,
        *,
        config: Mapping[str, Any] | None = None,
        description: str = "",
    ) -> DeploymentOut:
        """Serve ``model`` (``churn@champion`` follows the alias; ``churn@3`` is pinned)."""
        return self.backend.create(
            self._ws.project, name, model, config=config, description=description
        )

    def get(self, name: str) -> DeploymentOut:
        return self.backend.get(self._ws.project, name)

    def list(self) -> builtins.list[DeploymentOut]:
        return self.backend.list(self._ws.project)

    def update(
        self,
        name: str,
        *,
        model: str | None = None,
        config: Mapping[str, Any] | None = None,
        description: str | None = None,
        status: str | None = None,
    ) -> DeploymentOut:
        return self.backend.update(
            self._ws.project, name, model=model, config=config, description=description,
            status=status,
        )  # fmt: skip

    def delete(self, name: str) -> DeploymentOut:
        return self.backend.delete(self._ws.project, name)

    def create_token(self, name: str, label: str = "default") -> DeploymentTokenOut:
        """A bearer token for this deployment's inference routes only (shown once)."""
        return self.backend.create_token(self._ws.project, name, label)

    def tokens(self, name: str) -> builtins.list[DeploymentTokenOut]:
        return self.backend.list_tokens(self._ws.project, name)

    def revoke_token(self, name: str, token_id: str) -> None:
        self.backend.revoke_token(self._ws.project, name, token_id)
