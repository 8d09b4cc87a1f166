"""Raw-HTTP helpers for the sandbox contract tests (deliberately not the product client)."""

from __future__ import annotations

from typing import Any

import httpx

from mixpanel_dsr.mixpanel.types import Region
from mixpanel_dsr.sandbox import RunningSandbox
from tests.sandbox_fixtures import PROJECTS

PATHS = {"deletion": "data-deletions/v3.0", "retrieval": "data-retrievals/v3.0"}


class Api:
    """Calls one running sandbox's GDPR API as a client would, with the demo credentials."""

    def __init__(self, sandbox: RunningSandbox, client: httpx.AsyncClient) -> None:
        self.sandbox = sandbox
        self.client = client

    def url(self, region: Region, kind: str, tracking_id: str | None = None) -> str:
        base = f"{self.sandbox.base_urls[region]}/{PATHS[kind]}/"
        return base + tracking_id if tracking_id else base

    def auth(self, region: Region, oauth: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {oauth or PROJECTS[region][1]}"}

    def params(self, region: Region, token: str | None = None) -> dict[str, str]:
        return {"token": token or PROJECTS[region][0]}

    async def create(
        self,
        kind: str,
        region: Region = Region.US,
        body: Any = None,
        *,
        ids: list[str] | None = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        if body is None and content is None:
            body = {"distinct_ids": ids or ["user-1"]}
        return await self.client.post(
            self.url(region, kind),
            params=self.params(region, token),
            headers=headers if headers is not None else self.auth(region),
            json=body if content is None else None,
            content=content,
        )

    async def create_id(self, kind: str, region: Region = Region.US, **kwargs: Any) -> str:
        response = await self.create(kind, region, **kwargs)
        assert response.status_code == 200, response.text
        return str(response.json()["results"]["task_id"])

    async def status(
        self, kind: str, tracking_id: str, region: Region = Region.US, **kwargs: Any
    ) -> httpx.Response:
        return await self.client.get(
            self.url(region, kind, tracking_id),
            params=self.params(region),
            headers=self.auth(region),
            **kwargs,
        )

    async def state(self, kind: str, tracking_id: str, region: Region = Region.US) -> str:
        response = await self.status(kind, tracking_id, region)
        assert response.status_code == 200, response.text
        return str(response.json()["results"]["status"])

    async def cancel(self, tracking_id: str, region: Region = Region.US) -> httpx.Response:
        return await self.client.delete(
            self.url(region, "deletion", tracking_id),
            params=self.params(region),
            headers=self.auth(region),
        )
