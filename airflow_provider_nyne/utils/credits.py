"""The credit guard, on the submitting task's side: checked before anything is sent, never after.

:class:`~airflow_provider_nyne.operators.interactions.NyneSubmitInteractionsOperator` has two
optional limits:

* ``min_credit_balance``: read the account's balance from the free ``GET /usage`` and refuse
  a submission that could take it below the floor (:func:`check_balance`). A floor, read
  without any lock: concurrent tasks may all see the same balance. Use it to stop spending
  from an account that is running low, not to share the last credits out;
* ``credit_budget``: the credits one DAG run may spend per connection. Each submission
  first reserves one lookup's credits at the api-server (:class:`CreditReservations`), whose
  database decides atomically (:mod:`~airflow_provider_nyne.callbacks.credits`): with 20
  mapped tasks racing for a budget of 5 lookups, exactly 5 are submitted. A reservation is
  idempotent per task instance and lookup, kept when the task is killed or waits out a rate
  limit, and given back only when the submission proves it was not accepted.

Requests to the api-server carry no credential in the URL: the JSON body is signed with the
connection's signing secret (its ``callback_secret`` extra, else ``[nyne] callback_secret``)
and the api-server is reached at ``[nyne] callback_internal_url`` (by default the root of
``[core] execution_api_server_url``, which task processes already reach). When the guard
cannot decide (no secret, the plugin missing, the api-server unreachable), nothing is sent.

A fan-out can check its whole cost before it maps anything: :func:`require_balance_for` in
its planning task (``example_nyne_fan_out`` does).

This module imports neither Airflow nor the database at the top: the wire format here is
shared with the receiver, which imports it; :func:`require_balance_for` imports the hook when
a task calls it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_nyne.utils.arguments import CREDITS_PER_LOOKUP, DEFAULT_CONN_ID

__all__ = [
    "BALANCE_FIELDS",
    "CreditGuardError",
    "CreditHold",
    "CreditLimitError",
    "CreditRequestError",
    "CreditReservations",
    "Reservation",
    "ReservationKey",
    "balance_from_usage",
    "check_balance",
    "require_balance_for",
]

#: Where ``GET /usage`` may carry the balance (the API does not document one name).
BALANCE_FIELDS = ("credits_remaining", "remaining_credits", "credits", "balance")
_MAX_FIELD = 250
_ID_FIELDS = ("dag_id", "run_id", "task_id", "conn_id", "fingerprint")


class CreditLimitError(Exception):
    """A submission the guard refuses: it would exceed the run's budget or go below the balance floor."""


class CreditGuardError(Exception):
    """
    The guard could not decide, so nothing is sent.

    :param message: what failed and how to fix it (no secret)
    :param retryable: whether a later try may succeed (api-server unreachable or failing)
        rather than a setting to fix (no secret, no plugin, a refused signature)
    """

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class CreditRequestError(ValueError):
    """A reservation request that cannot be read (the receiver answers ``400``)."""


def balance_from_usage(usage: Mapping[str, Any]) -> int | None:
    """
    The credit balance in a ``GET /usage`` answer, or ``None`` when it carries none.

    :param usage: the answer's ``data`` object
    """
    for name in BALANCE_FIELDS:
        value = usage.get(name)
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            return int(value)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value.strip())
    return None


def check_balance(balance: int | None, minimum: int, *, lookups: int = 1) -> None:
    """
    Refuse when ``lookups`` lookups could take the balance below ``minimum``.

    :param balance: the account's balance (:func:`balance_from_usage`)
    :param minimum: the floor, credits
    :param lookups: how many lookups are about to be submitted
    :raises CreditGuardError: when the balance is unknown
    :raises CreditLimitError: naming the balance, the floor and the cost
    """
    if balance is None:
        raise CreditGuardError(
            f"GET /usage answered without a credit balance (looked for {', '.join(BALANCE_FIELDS)}), "
            "so the minimum balance cannot be checked",
            retryable=False,
        )
    cost = lookups * CREDITS_PER_LOOKUP
    if balance - cost < minimum:
        what = "this lookup" if lookups == 1 else f"{lookups} lookups"
        raise CreditLimitError(
            f"the account's balance is {balance} credits; {what} may cost {cost} "
            f"({CREDITS_PER_LOOKUP} each), which would leave less than the minimum balance of "
            f"{minimum}: top up in the Nyne dashboard or lower min_credit_balance"
        )


def require_balance_for(lookups: int, *, nyne_conn_id: str = DEFAULT_CONN_ID, minimum: int = 0) -> int:
    """
    In a task, before a fan-out is mapped: fail unless the account's balance covers ``lookups`` lookups.

    Reads the free ``GET /usage`` once and returns the balance. Concurrent runs may each see
    the same balance: pair it with ``credit_budget`` on the lookups for a cap no race can pass.

    :param lookups: how many lookups the fan-out is about to submit
    :param nyne_conn_id: the ``nyne`` connection (its account)
    :param minimum: credits that must remain after all of them
    :raises AirflowFailException: naming the balance, the cost and the minimum (no retry: a
        top-up or a smaller fan-out is a person's decision), or an account error (401, 403)
    :raises AirflowException: when the usage endpoint fails for now (Airflow's retries apply)
    """
    from airflow_provider_nyne._compat import AirflowException, AirflowFailException
    from airflow_provider_nyne.client.errors import NyneError
    from airflow_provider_nyne.hooks.nyne import NyneHook

    hook = NyneHook(nyne_conn_id)
    try:
        balance = balance_from_usage(hook.get_usage())
        check_balance(balance, minimum, lookups=lookups)
    except (CreditLimitError, CreditGuardError) as err:
        raise AirflowFailException(
            f"Nyne: {err} (connection {nyne_conn_id!r}); nothing was submitted"
        ) from None
    except NyneError as err:
        failure = AirflowException if err.retryable else AirflowFailException
        raise failure(f"Nyne: cannot read the balance of connection {nyne_conn_id!r}: {err}") from None
    finally:
        hook.close()
    assert balance is not None  # check_balance refuses an unknown balance
    return balance


@dataclass(frozen=True)
class ReservationKey:
    """
    Whose credits: one lookup of one task instance, in the budget of its DAG run and connection.

    :param dag_id: the DAG
    :param run_id: the DAG run
    :param task_id: the submitting task
    :param map_index: its map index (``-1`` when not mapped)
    :param conn_id: the ``nyne`` connection (the account whose credits are spent)
    :param fingerprint: the lookup's :meth:`~airflow_provider_nyne.client.request.InteractionRequest.fingerprint`
    """

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    conn_id: str
    fingerprint: str

    def label(self) -> str:
        """``dag.task[map_index] @ run`` for logs and messages."""
        mapped = f"[{self.map_index}]" if self.map_index >= 0 else ""
        return f"{self.dag_id}.{self.task_id}{mapped} @ {self.run_id}"

    def to_json(self) -> dict[str, Any]:
        """The fields as the endpoint receives them."""
        return {
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "task_id": self.task_id,
            "map_index": self.map_index,
            "conn_id": self.conn_id,
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReservationKey:
        """
        Read the fields of a request body.

        :param data: the decoded body
        :raises CreditRequestError: naming the field at fault
        """
        values: dict[str, str] = {}
        for name in _ID_FIELDS:
            value = data.get(name)
            if not isinstance(value, str) or not value or len(value) > _MAX_FIELD:
                raise CreditRequestError(f"{name} must be a string of 1 to {_MAX_FIELD} characters")
            values[name] = value
        map_index = data.get("map_index")
        if not isinstance(map_index, int) or isinstance(map_index, bool) or map_index < -1:
            raise CreditRequestError("map_index must be an integer, -1 or more")
        return cls(
            dag_id=values["dag_id"],
            run_id=values["run_id"],
            task_id=values["task_id"],
            map_index=map_index,
            conn_id=values["conn_id"],
            fingerprint=values["fingerprint"],
        )


@dataclass(frozen=True)
class Reservation:
    """
    The answer to a reservation request.

    :param granted: whether the lookup's credits are reserved (now, or by an earlier try)
    :param reservation_id: names the reservation (for a release); ``None`` when refused
    :param reserved: credits reserved in the run's budget after this request
    :param budget: the budget the request was checked against
    :param credits: the credits of one lookup
    :param repeated: the reservation existed already (a retry or reconnect of the same lookup)
    """

    granted: bool
    reservation_id: str | None
    reserved: int
    budget: int
    credits: int = CREDITS_PER_LOOKUP
    repeated: bool = False

    def to_json(self) -> dict[str, Any]:
        """The endpoint's answer."""
        return {
            "granted": self.granted,
            "reservation_id": self.reservation_id,
            "reserved": self.reserved,
            "budget": self.budget,
            "credits": self.credits,
            "repeated": self.repeated,
        }

    @classmethod
    def from_json(cls, data: Any) -> Reservation:
        """
        Read the endpoint's answer.

        :param data: the decoded answer
        :raises ValueError: when it is not one
        """
        if not isinstance(data, Mapping) or not isinstance(data.get("granted"), bool):
            raise ValueError("not a reservation")
        rid = data.get("reservation_id")
        return cls(
            granted=data["granted"],
            reservation_id=rid if isinstance(rid, str) else None,
            reserved=int(data["reserved"]),
            budget=int(data["budget"]),
            credits=int(data.get("credits", CREDITS_PER_LOOKUP)),
            repeated=bool(data.get("repeated", False)),
        )

    def refusal(self, key: ReservationKey) -> str:
        """Why a refused reservation was refused, naming the budget and what is left of it."""
        left = max(0, self.budget - self.reserved)
        return (
            f"the credit budget of this DAG run for connection {key.conn_id!r} is {self.budget} credits, "
            f"{self.reserved} are reserved by its other lookups and {left} left; this lookup may cost "
            f"{self.credits}, so it was not submitted. Raise credit_budget, or clear this task once other "
            "lookups of the run have given their reservations back"
        )


@dataclass(frozen=True)
class CreditHold:
    """
    A granted reservation, as the submitting task keeps it (to release it if nothing was accepted).

    :param key: whose lookup
    :param reservation: the endpoint's answer
    """

    key: ReservationKey
    reservation: Reservation


class CreditReservations:
    """
    Reserve and release credits at the api-server's credit guard (the receiver app).

    Both calls are idempotent, so transport failures and ``503`` are tried again a few times.
    ``repr()`` shows no secret.

    :param root_url: the api-server root as task processes reach it
    :param secret: the signing secret of the connection
    :param timeout: seconds per request
    :param attempts: tries per call on transport failures and ``503``
    :param retry_delay: seconds before the second try (doubling)
    """

    def __init__(
        self,
        root_url: str,
        secret: str,
        *,
        timeout: float = 10.0,
        attempts: int = 3,
        retry_delay: float = 0.5,
    ) -> None:
        self.root_url = root_url.rstrip("/")
        self._secret = secret
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self.retry_delay = retry_delay

    def __repr__(self) -> str:
        return f"CreditReservations(root_url={self.root_url!r})"

    @classmethod
    def for_connection(cls, nyne_conn_id: str, connection_secret: str | None) -> CreditReservations:
        """
        The credit guard as this deployment's workers reach it, signing with the connection's secret.

        :param nyne_conn_id: the ``nyne`` connection (named in the errors)
        :param connection_secret: its ``callback_secret`` extra, if any
        :raises CreditGuardError: (not retryable) when the api-server's address or a secret is not set
        """
        from airflow_provider_nyne.callbacks import config

        try:
            root = config.internal_url()
        except config.CallbackConfigError as err:
            raise CreditGuardError(str(err), retryable=False) from None
        if not root:
            raise CreditGuardError(
                "credit_budget needs the api-server's address as workers reach it: set [nyne] "
                "callback_internal_url (or [core] execution_api_server_url)",
                retryable=False,
            )
        secret = config.signing_secret(connection_secret)
        if not secret:
            raise CreditGuardError(
                "credit_budget needs a signing secret: set [nyne] callback_secret (env "
                "AIRFLOW__NYNE__CALLBACK_SECRET), the same on the workers and the api-server, or the "
                f"callback_secret extra of connection {nyne_conn_id!r}",
                retryable=False,
            )
        return cls(root, secret)

    def reserve(self, key: ReservationKey, budget: int) -> CreditHold:
        """
        Reserve one lookup's credits in the run's budget.

        :param key: whose lookup
        :param budget: credits the run may spend with this connection
        :raises CreditLimitError: when the budget would be exceeded (nothing reserved)
        :raises CreditGuardError: when the api-server cannot decide
        """
        status, data = self._post("reserve", {**key.to_json(), "budget": budget})
        try:
            reservation = Reservation.from_json(data)
        except (ValueError, KeyError, TypeError):
            raise CreditGuardError(
                f"the credit guard at {self.root_url} answered HTTP {status} without a reservation",
                retryable=True,
            ) from None
        if status == 409 or not reservation.granted:
            raise CreditLimitError(reservation.refusal(key))
        if reservation.reservation_id is None:
            raise CreditGuardError(
                f"the credit guard at {self.root_url} granted a reservation without an id", retryable=True
            )
        return CreditHold(key, reservation)

    def release(self, hold: CreditHold) -> bool:
        """
        Give a reservation back (its submission proved it was not accepted); whether it was released now.

        :param hold: what :meth:`reserve` returned
        :raises CreditGuardError: when the api-server cannot be told
        """
        body = {**hold.key.to_json(), "reservation_id": hold.reservation.reservation_id}
        _, data = self._post("release", body)
        return bool(isinstance(data, Mapping) and data.get("released"))

    def _post(self, action: str, payload: Mapping[str, Any]) -> tuple[int, Any]:
        import httpx

        from airflow_provider_nyne.callbacks.tokens import (
            CREDITS_PATH,
            CREDITS_SIGNATURE_HEADER,
            URL_PREFIX,
            sign_credit_request,
        )

        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8")
        url = f"{self.root_url}{URL_PREFIX}{CREDITS_PATH}/{action}"
        headers = {
            "content-type": "application/json",
            CREDITS_SIGNATURE_HEADER: sign_credit_request(self._secret, body),
        }
        delay = self.retry_delay
        problem = ""
        for attempt in range(1, self.attempts + 1):
            try:
                with httpx.Client(timeout=self.timeout, trust_env=False) as client:
                    response = client.post(url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                problem = f"unreachable ({type(exc).__name__})"
            else:
                if response.status_code == 404:
                    raise CreditGuardError(
                        f"the credit guard at {url} answered 404: install airflow-provider-nyne on the "
                        "api-server, set [nyne] callback_secret there (or [nyne] callback_base_url), and "
                        "make sure the task and the api-server sign with the same secret",
                        retryable=False,
                    )
                if response.status_code in (400, 403):
                    raise CreditGuardError(
                        f"the credit guard refused the request: {response.text[:200]}", retryable=False
                    )
                if response.status_code in (200, 409):
                    try:
                        return response.status_code, response.json()
                    except ValueError:
                        problem = f"an unreadable answer (HTTP {response.status_code})"
                else:
                    problem = f"HTTP {response.status_code}"
            if attempt < self.attempts:
                time.sleep(delay)
                delay *= 2
        raise CreditGuardError(
            f"the credit guard at {url} could not be asked: {problem}; set [nyne] callback_internal_url "
            "to the api-server root the workers reach",
            retryable=True,
        )
