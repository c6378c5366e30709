"""DeploymentManager: keeps a :class:`~modelworks.serving.host.ModelHost` in step with the
deployments table and the registry.

Every ``interval`` seconds (and on :meth:`sync_once`) it lists the active deployments,
resolves each one's reference (``churn@champion`` follows the alias), and when what should
be served changed — a moved alias, a new config, a canary or shadow — it loads the new
version(s) *beside* the old ones, warms them up, and swaps them in with one
``host.put``: requests in flight finish on the old model, new ones go to the new, so an
alias move costs no failed request. A version that fails to load leaves the previous one
serving; the error is recorded on the deployment (``modelworks deployments show``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from typing import Any

from modelworks.core.auth import Principal, Role
from modelworks.core.store import Store
from modelworks.serving.host import DeploymentConfig, ModelHost
from modelworks.serving.runtime import ModelRuntime
from modelworks.serving.schemas import DeploymentOut
from modelworks.serving.service import TOKEN_PREFIX, DeploymentService

log = logging.getLogger("modelworks.serving")

# The serving side acts as the system: it reads every project's deployments and models.
SYSTEM = Principal(username="modelworks-serving", superuser=True, via="system")
TOKEN_TTL_S = 5.0


class DeploymentManager:
    def __init__(self, store: Store, host: ModelHost, *, interval: float = 2.0) -> None:
        from modelworks.registry.evaluations import EvaluationService

        self.store = store
        self.host = host
        self.interval = interval
        self.service = DeploymentService(store)
        self._evaluations = EvaluationService(store)
        self._loaded: dict[str, tuple[Any, ...]] = {}
        self._runtimes: dict[tuple[str, str], ModelRuntime] = {}
        self._projects: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._token_cache: dict[tuple[str, str], tuple[bool, float]] = {}

    # ---- the loop ----------------------------------------------------------------------
    def start(self) -> DeploymentManager:
        self.host.expect(*[d.name for d in self._safe_active()])
        self._thread = threading.Thread(target=self._run, name="modelworks-deployments",
                                        daemon=True)  # fmt: skip
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync_once()
            except Exception:  # the loop must survive a database hiccup
                log.exception("deployment sync failed; retrying in %.0f s", self.interval)
            self._stop.wait(self.interval)

    def _safe_active(self) -> list[DeploymentOut]:
        try:
            return self.service.active()
        except Exception:
            log.exception("could not list deployments")
            return []

    def sync_once(self) -> None:
        """Bring the host in line with the deployments table, once."""
        with self._lock:
            active = self.service.active()
            wanted = {d.name for d in active}
            for name in set(self.host.names()) - wanted:
                with contextlib.suppress(Exception):
                    self.host.remove(name)
                self._loaded.pop(name, None)
            for d in active:
                self._projects[d.name] = d.project_id
                self._sync(d)
            used = {key for key in self._runtimes if any(key[0] == n for n in wanted)}
            self._runtimes = {k: v for k, v in self._runtimes.items() if k in used}

    def _sync(self, d: DeploymentOut) -> None:
        try:
            config = DeploymentConfig.model_validate(d.config)
            primary = self.service.registry.get_version(SYSTEM, d.project_id, d.ref)
            canary = shadow = None
            if config.canary is not None:
                canary = self.service.registry.get_version(SYSTEM, d.project_id,
                                                           config.canary.version)  # fmt: skip
            if config.shadow is not None:
                shadow = self.service.registry.get_version(SYSTEM, d.project_id,
                                                           config.shadow.version)  # fmt: skip
            key = (
                primary.id,
                canary.id if canary else None,
                shadow.id if shadow else None,
                config.model_dump_json(),
            )
            if self._loaded.get(d.name) == key and d.name in self.host:
                return
            if d.name not in self.host:
                self.host.expect(d.name)
            runtimes = [
                self._runtime(d, v) if v is not None else None for v in (primary, canary, shadow)
            ]
            assert runtimes[0] is not None
            self.host.put(d.name, runtimes[0], config, canary=runtimes[1], shadow=runtimes[2])
            self._loaded[d.name] = key
            self.service.mark_served(d.id, primary.version, primary.id, None)
            log.info("deployment %s serves %s", d.name, primary.ref)
        except Exception as exc:
            self.host.forget(d.name)
            detail = getattr(exc, "detail", None) or f"{type(exc).__name__}: {exc}"
            log.warning("deployment %s: could not load %s: %s", d.name, d.ref, detail)
            with contextlib.suppress(Exception):
                self.service.mark_served(d.id, None, None, str(detail)[:2000])

    def _runtime(self, d: DeploymentOut, version: Any) -> ModelRuntime:
        key = (d.name, version.id)
        found = self._runtimes.get(key)
        if found is not None:
            return found
        _, package = self._evaluations.load(SYSTEM, d.project_id, version.ref)
        runtime = ModelRuntime(package, name=d.name, version=version.ref, version_id=version.id)
        runtime.warmup()
        self._runtimes[key] = runtime
        return runtime

    # ---- who may call a deployment ---------------------------------------------------------
    def check_token(self, token: str | None, deployment: str) -> bool:
        """A deployment token scoped to ``deployment``, or a user's API token with at least
        the viewer role in the deployment's project.

        Called on the event loop for every prediction, so decisions are cached for
        ``TOKEN_TTL_S`` seconds: a revoked token stops working within that time.
        """
        if not token:
            return False
        key = (hashlib.sha256(token.encode()).hexdigest(), deployment)
        now = time.monotonic()
        cached = self._token_cache.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        allowed = self._check_token(token, deployment)
        if len(self._token_cache) > 10_000:
            self._token_cache.clear()
        self._token_cache[key] = (allowed, now + TOKEN_TTL_S)
        return allowed

    def _check_token(self, token: str, deployment: str) -> bool:
        if token.startswith(TOKEN_PREFIX):
            return self.service.check_token(token, deployment)
        from modelworks.core.errors import ModelworksError
        from modelworks.governance.access import role_in
        from modelworks.governance.service import GovernanceService

        project_id = self._projects.get(deployment)
        if project_id is None:
            return False
        try:
            principal = GovernanceService(self.store).authenticate_token(token)
        except ModelworksError:
            return False
        with self.store.read() as s:
            role = role_in(s, principal, project_id)
        return role is not None and role >= Role.VIEWER
