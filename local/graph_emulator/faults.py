"""Injected faults: a status (and code, Retry-After) and/or latency for matching Graph requests."""

from __future__ import annotations

import itertools
import logging
import random
from dataclasses import dataclass, field
from typing import Any

from local.graph_emulator.errors import GraphError, default_code_for

logger = logging.getLogger(__name__)

# The methods Graph's routes take here; a fault naming another would never match.
METHODS = frozenset({"GET", "POST", "PATCH", "PUT", "DELETE"})


@dataclass
class Fault:
    id: int
    mailbox: str | None
    path_contains: str | None
    status: int | None
    code: str | None
    message: str | None
    remaining: int | None  # None: until cleared
    retry_after: int | None
    latency_ms: int
    # Chance that a matching request is hit (None: every one); a miss spends no count.
    probability: float | None = None
    # The request is carried out and only its answer is the fault: an answer lost on its
    # way back (a gateway timeout after the mailbox wrote). Graph's event `transactionId`
    # exists for this case: "in case of client retries to create the same event [...]
    # when low network connectivity causes the client to time out before receiving a
    # response from the server for the client's prior create-event request"
    # (resources/event.md).
    after_applying: bool = False
    seed: int | None = None
    draws: random.Random = field(default_factory=random.Random, repr=False, compare=False)
    # Only requests of this HTTP method (None: any): a fault on an update, say, that the
    # reads of the same event leave alone.
    method: str | None = None

    def matches(self, mailbox_keys: set[str], path: str, method: str | None = None) -> bool:
        if self.mailbox is not None and self.mailbox not in mailbox_keys:
            return False
        if self.method is not None and (method or "").upper() != self.method:
            return False
        return self.path_contains is None or self.path_contains.lower() in path.lower()

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "mailbox": self.mailbox,
            "pathContains": self.path_contains,
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "count": self.remaining,
            "retryAfter": self.retry_after,
            "latencyMs": self.latency_ms,
            "probability": self.probability,
            "seed": self.seed,
            "afterApplying": self.after_applying,
            "method": self.method,
        }

    def strikes(self) -> bool:
        """Whether this matching request is hit (always, without a probability)."""
        return self.probability is None or self.draws.random() < self.probability

    def to_error(self) -> GraphError:
        assert self.status is not None
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}
        return GraphError(
            self.status,
            self.code or default_code_for(self.status),
            self.message or "Fault injected by the Graph emulator.",
            headers=headers,
        )


def _optional_probability(body: dict[str, Any]) -> float | None:
    value = body.get("probability")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ValueError("'probability' must be a number in (0, 1]")
    return float(value)


def _optional_int(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"'{key}' must be an integer")
    return value


class FaultRegistry:
    """Faults in the order added; the first match wins and spends one of its count."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)

    def add(self, body: dict[str, Any]) -> Fault:
        """Validate a control-API body and register it. Raises ValueError when malformed."""
        status = _optional_int(body, "status")
        latency = _optional_int(body, "latencyMs") or 0
        if status is None and latency <= 0:
            raise ValueError("a fault needs a 'status' or a positive 'latencyMs'")
        if status is not None and not 100 <= status <= 599:
            raise ValueError("'status' must be an HTTP status")
        count = _optional_int(body, "count")
        if count is not None and count < 1:
            raise ValueError("'count' must be at least 1 (omit it for until-cleared)")
        probability = _optional_probability(body)
        seed = _optional_int(body, "seed")
        after_applying = body.get("afterApplying", False)
        if not isinstance(after_applying, bool):
            raise ValueError("'afterApplying' must be true or false")
        if after_applying and status is None:
            raise ValueError("'afterApplying' needs a 'status': the answer that replaces it")
        mailbox = body.get("mailbox")
        path_contains = body.get("pathContains")
        method = body.get("method")
        if method is not None and (
            not isinstance(method, str) or not method.isascii() or method.upper() not in METHODS
        ):
            raise ValueError(f"'method' must be one of {', '.join(sorted(METHODS))}")
        fault = Fault(
            id=next(self._ids),
            mailbox=str(mailbox).lower() if mailbox else None,
            path_contains=str(path_contains) if path_contains else None,
            status=status,
            code=str(body["code"]) if body.get("code") else None,
            message=str(body["message"]) if body.get("message") else None,
            remaining=count,
            retry_after=_optional_int(body, "retryAfter"),
            latency_ms=latency,
            probability=probability,
            seed=seed,
            draws=random.Random(seed),  # noqa: S311 - fault injection, not cryptography
            after_applying=after_applying,
            method=method.upper() if method else None,
        )
        self._faults.append(fault)
        logger.info("fault %s added: status=%s latency=%sms", fault.id, status, latency)
        return fault

    def take(self, mailbox_keys: set[str], path: str, method: str | None = None) -> Fault | None:
        """The first matching fault that strikes, its count spent (and removed when used
        up). A fault with a probability that does not strike lets later faults match."""
        for fault in self._faults:
            if fault.matches(mailbox_keys, path, method) and fault.strikes():
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                return fault
        return None

    def remove(self, fault_id: int) -> bool:
        before = len(self._faults)
        self._faults = [f for f in self._faults if f.id != fault_id]
        return len(self._faults) != before

    def clear(self) -> None:
        self._faults.clear()

    def list(self) -> list[Fault]:
        return list(self._faults)
