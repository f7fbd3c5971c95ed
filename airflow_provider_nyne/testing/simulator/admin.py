"""The admin endpoints under ``/_simulator``: ledger, faults, accounts, settings, held jobs.

Not part of the real API and not authenticated: the simulator binds to loopback.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from airflow_provider_nyne.testing.simulator.asgi import (
    Scope,
    Send,
    envelope,
    error_body,
    query_param,
    send_json,
)
from airflow_provider_nyne.testing.simulator.core import SimulatorCore
from airflow_provider_nyne.testing.simulator.ledger import ledger_snapshot
from airflow_provider_nyne.testing.simulator.records import account_from_mapping

__all__ = ["ADMIN_PREFIX", "handle_admin"]

ADMIN_PREFIX = "/_simulator"

_Handler = Callable[[SimulatorCore, Scope, Any], Any]


async def handle_admin(
    core: SimulatorCore, method: str, route: str, scope: Scope, body: bytes, send: Send
) -> None:
    """Answer an admin request (bad input is a ``400 invalid_admin_request`` naming the problem).

    :param core: the simulator's state.
    :param method: the HTTP method.
    :param route: the path after :data:`ADMIN_PREFIX`.
    :param scope: the ASGI scope.
    :param body: the request body (JSON or empty).
    :param send: the ASGI send callable.
    """
    route = route or "/"
    try:
        payload: Any = json.loads(body) if body.strip() else None
    except ValueError:
        await send_json(send, 400, error_body("invalid_json", "admin request body is not valid JSON"))
        return
    handler = _ROUTES.get((method, route))
    if handler is None:
        await send_json(send, 404, error_body("not_found", f"No admin route {method} {ADMIN_PREFIX}{route}"))
        return
    try:
        result = handler(core, scope, payload)
    except (ValueError, TypeError, KeyError) as exc:
        await send_json(send, 400, error_body("invalid_admin_request", str(exc)))
        return
    await send_json(send, 200, envelope(result))


def _health(core: SimulatorCore, scope: Scope, payload: Any) -> Any:
    return {"status": "ok"}


def _ledger(core: SimulatorCore, scope: Scope, payload: Any) -> Any:
    summary = (query_param(scope, "summary") or "").lower() in ("1", "true", "yes")
    return ledger_snapshot(core, summary=summary)


def _reset(core: SimulatorCore, scope: Scope, payload: Any) -> Any:
    restore = bool(payload.get("settings", False)) if isinstance(payload, dict) else False
    core.reset(settings=restore)
    return {"reset": True, "settings_restored": restore}


def _faults(core: SimulatorCore, scope: Scope, payload: Any) -> Any:
    return {"faults": [rule.as_dict() for rule in core.faults.active()]}


def _add_faults(core: SimulatorCore, scope: Scope, payload: Any) -> Any:
    specs = payload if isinstance(payload, list) else [payload]
    for spec in specs:
        if not isinstance(spec, dict):
            raise TypeError("a fault is a JSON object with a 'kind'")
    added = [core.faults.add(spec).as_dict() for spec in specs]
    return {"added": added, "faults": [rule.as_dict() for rule in core.faults.active()]}


def _clear_faults(core: SimulatorCore, scope: Scope, payload: Any) -> Any:
    core.faults.clear()
    return {"faults": []}


def _accounts(core: SimulatorCore, scope: Scope, payload: Any) -> Any:
    core.settle_due()
    with core.lock:
        return {"accounts": [account.public() for account in core.accounts.values()]}


def _add_account(core: SimulatorCore, scope: Scope, payload: Any) -> Any:
    if not isinstance(payload, dict):
        raise TypeError("an account is a JSON object with api_key and api_secret")
    return core.upsert_account(account_from_mapping(payload)).public()


def _release_jobs(core: SimulatorCore, scope: Scope, payload: Any) -> Any:
    request_id = payload.get("request_id") if isinstance(payload, dict) else None
    if request_id is not None and not isinstance(request_id, str):
        raise TypeError("request_id is a string")
    return {"released": core.release_jobs(request_id)}


def _settings(core: SimulatorCore, scope: Scope, payload: Any) -> Any:
    return core.settings.as_dict()


def _update_settings(core: SimulatorCore, scope: Scope, payload: Any) -> Any:
    if not isinstance(payload, dict):
        raise TypeError("settings are a JSON object")
    return core.configure(payload).as_dict()


_ROUTES: dict[tuple[str, str], _Handler] = {
    ("GET", "/health"): _health,
    ("GET", "/ledger"): _ledger,
    ("POST", "/reset"): _reset,
    ("GET", "/faults"): _faults,
    ("POST", "/faults"): _add_faults,
    ("DELETE", "/faults"): _clear_faults,
    ("POST", "/faults/clear"): _clear_faults,
    ("GET", "/accounts"): _accounts,
    ("POST", "/accounts"): _add_account,
    ("POST", "/jobs/release"): _release_jobs,
    ("GET", "/settings"): _settings,
    ("POST", "/settings"): _update_settings,
}
