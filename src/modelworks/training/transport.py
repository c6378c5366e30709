"""Training's SDK transports: TrainingService in this process, or its REST routes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from pydantic import TypeAdapter

from modelworks.training.schemas import RunInputOut

if TYPE_CHECKING:
    from modelworks.core.auth import Principal
    from modelworks.core.store import Store
    from modelworks.transport import HttpClient

_INPUTS = TypeAdapter(list[RunInputOut])


class TrainingBackend(Protocol):
    """TrainingService minus the principal, as the SDK sees it."""

    def record_input(
        self, run_id: str, dataset: str, relation: str = "trained_on"
    ) -> RunInputOut: ...

    def list_inputs(self, run_id: str) -> list[RunInputOut]: ...


class EmbeddedTraining:
    """TrainingService with the principal bound."""

    def __init__(self, store: Store, principal: Principal) -> None:
        from modelworks.training.service import TrainingService

        self.service = TrainingService(store)
        self.principal = principal

    def record_input(self, run_id: str, dataset: str, relation: str = "trained_on") -> RunInputOut:
        return self.service.record_input(self.principal, run_id, dataset, relation)

    def list_inputs(self, run_id: str) -> list[RunInputOut]:
        return self.service.list_inputs(self.principal, run_id)


class RemoteTraining:
    """The training routes of a Modelworks server."""

    def __init__(self, http: HttpClient) -> None:
        self.http = http

    def record_input(self, run_id: str, dataset: str, relation: str = "trained_on") -> RunInputOut:
        from modelworks.transport import API, _seg

        body = {"dataset": dataset, "relation": relation}
        resp = self.http.request(
            "POST", f"{API}/runs/{_seg(run_id)}/inputs", idempotent=False, json_body=body
        )
        return RunInputOut.model_validate_json(resp.content)

    def list_inputs(self, run_id: str) -> list[RunInputOut]:
        from modelworks.transport import API, _seg

        resp = self.http.request("GET", f"{API}/runs/{_seg(run_id)}/inputs", idempotent=True)
        return _INPUTS.validate_json(resp.content)


def embedded_training(store: Store, principal: Principal | None = None) -> TrainingBackend:
    from modelworks.core.auth import local_principal

    return EmbeddedTraining(store, principal or local_principal())
