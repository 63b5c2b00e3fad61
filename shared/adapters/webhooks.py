"""HTTP client for the booking-events webhook (httpx, already a dependency of the Graph SDK)."""

from __future__ import annotations

import httpx


class HttpWebhookTarget:
    """POSTs with one pooled client per process; transport errors surface as OSError."""

    def __init__(self, timeout_seconds: float = 10.0) -> None:
        self._client = httpx.AsyncClient(timeout=timeout_seconds, follow_redirects=False)

    async def post(self, url: str, body: str, headers: dict[str, str]) -> int:
        try:
            response = await self._client.post(url, content=body.encode(), headers=headers)
        except httpx.TransportError as exc:
            raise ConnectionError(f"webhook POST failed: {type(exc).__name__}") from exc
        return response.status_code

    async def close(self) -> None:
        await self._client.aclose()
