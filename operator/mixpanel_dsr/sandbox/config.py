"""Settings of the Mixpanel sandbox: pydantic models, loadable from a YAML or JSON file.

Every knob has a default that imitates Mixpanel as the fact sheet describes it, so an empty file
(or no file) gives a working sandbox. ``default_config()`` adds one demo project per region.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from mixpanel_dsr.mixpanel.types import MAX_IDS_PER_REQUEST, Region

#: Days of history a project has by default (how far back a retrieval scans).
DEFAULT_HISTORY_DAYS = 730
#: Outstanding retrieval scan budget per project, in days (fact sheet: "~5 years").
DEFAULT_SCAN_BUDGET_DAYS = 5 * 365
#: How long an export link stays valid after the retrieval finished (fact sheet: 14 days).
DEFAULT_EXPORT_LINK_TTL_SECONDS = 14 * 24 * 3600.0

#: Ports the CLI uses when nothing else is said (the models themselves default to 0 = ephemeral).
DEFAULT_CLI_PORTS: dict[Region, int] = {Region.US: 8701, Region.EU: 8702, Region.IN: 8703}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class OAuthTokenConfig(_Model):
    """A GDPR OAuth token the project accepts (``Authorization: Bearer <token>``)."""

    token: SecretStr = Field(min_length=1)
    #: After this instant the token is refused as expired (Mixpanel's expire after one year).
    expires_at: datetime | None = None
    #: What deletion statuses report as ``requesting_user``.
    requesting_user: str = "sandbox-user@example.com"

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        # Shorthand: a bare string is a token without expiry.
        if isinstance(value, str):
            return {"token": value}
        return value


class FaultConfig(_Model):
    """Faults injected into GDPR API calls (never into /_sandbox/ endpoints); all seeded.

    The sandbox's ``faults`` apply to every project; a project's own ``faults`` (ProjectConfig)
    apply to its calls and tasks too, drawn from an RNG of its own.
    """

    #: Probability of a 5xx answer (nothing is done).
    error_rate: float = Field(default=0.0, ge=0, le=1)
    error_statuses: list[int] = Field(default_factory=lambda: [500, 502, 503], min_length=1)
    #: Added to every call, plus a uniform random jitter in [0, latency_jitter_seconds].
    latency_seconds: float = Field(default=0.0, ge=0)
    latency_jitter_seconds: float = Field(default=0.0, ge=0)
    #: Probability that the connection is closed without an answer (nothing is done).
    drop_rate: float = Field(default=0.0, ge=0, le=1)
    #: Probability that the call IS carried out but the connection closes before the answer.
    lost_response_rate: float = Field(default=0.0, ge=0, le=1)
    #: Probability of a 200 answer whose body is not JSON (nothing is done).
    malformed_rate: float = Field(default=0.0, ge=0, le=1)
    #: The next N calls get 429 (counts down; set again to start another burst).
    burst_429: int = Field(default=0, ge=0)
    seed: int = 0
    # -- misbehaviour modes (a Mixpanel, or what stands in front of it, misbehaving) ----------
    #: Probability that a status answer reports a state the fact sheet does not list.
    unknown_state_rate: float = Field(default=0.0, ge=0, le=1)
    #: The made-up states it picks from.
    unknown_states: list[str] = Field(
        default_factory=lambda: ["QUEUED", "IN_PROGRESS", "processing"], min_length=1
    )
    #: Probability that an answer keeps its HTTP status but loses its body (the call IS
    #: carried out: a create makes its task, and the client never learns its tracking id).
    empty_body_rate: float = Field(default=0.0, ge=0, le=1)
    #: Probability of an HTML error page from a proxy in front of Mixpanel (nothing is done).
    html_error_rate: float = Field(default=0.0, ge=0, le=1)
    html_error_status: int = 502
    #: Probability of HTTP 200 whose body is ``{"status": "error", "error": ...}`` (nothing done).
    error_body_rate: float = Field(default=0.0, ge=0, le=1)
    #: Probability that the call IS carried out and its answer held for ``timeout_seconds``
    #: (longer than a client's timeout: the client gives up first).
    timeout_rate: float = Field(default=0.0, ge=0, le=1)
    timeout_seconds: float = Field(default=60.0, ge=0)
    #: Every call is refused with 403 (nothing is done): a token whose user lost its rights.
    forbidden: bool = False
    #: Probability that a new task vanishes: from ``vanish_after_seconds`` (sandbox clock) after
    #: its creation, its tracking id reads NOT_FOUND, and the task is not carried out.
    vanish_rate: float = Field(default=0.0, ge=0, le=1)
    vanish_after_seconds: float = Field(default=1.0, ge=0)
    #: A deletion whose ids were already in an earlier deletion of the project, whatever that
    #: one's state, is refused with 409 naming those ids and tasks (no task is created).
    conflict_on_resend: bool = False
    #: Probability that a new task stays STARTED ``stuck_started_days`` (times
    #: ``lifecycle.time_scale``) longer before it ends; ``POST /_sandbox/clock`` moves past it.
    stuck_started_rate: float = Field(default=0.0, ge=0, le=1)
    stuck_started_days: float = Field(default=30.0, ge=0)

    @field_validator("html_error_status")
    @classmethod
    def _html_error_status(cls, value: int) -> int:
        if not 400 <= value <= 599:
            raise ValueError("html_error_status must be 4xx or 5xx")
        return value

    @field_validator("error_statuses")
    @classmethod
    def _only_5xx(cls, value: list[int]) -> list[int]:
        if any(not 500 <= status <= 599 for status in value):
            raise ValueError("error_statuses must all be 5xx")
        return value


class ProjectConfig(_Model):
    """A Mixpanel project the sandbox knows."""

    #: The public project token (``?token=``).
    token: str = Field(min_length=1)
    region: Region = Region.US
    #: Numeric project id reported by deletion statuses; assigned when omitted.
    project_id: int | None = None
    name: str | None = None
    oauth_tokens: list[OAuthTokenConfig] = Field(default_factory=list)
    #: Most distinct ids per create call (Mixpanel: 2000, lower with Group Analytics).
    id_limit: int = Field(default=MAX_IDS_PER_REQUEST, ge=1)
    #: The project's API secret: the password of its export ZIPs (no password when unset).
    api_secret: SecretStr | None = None
    #: Days of history; every outstanding retrieval consumes this many days of scan budget.
    history_days: int = Field(default=DEFAULT_HISTORY_DAYS, ge=0)
    #: Overrides ``limits.rate_limit_per_s`` for this project.
    rate_limit_per_s: float | None = Field(default=None, ge=0)
    #: Overrides ``limits.conflict_409`` for this project (None: follow the global limit).
    conflict_409: bool | None = None
    #: Faults of this project's calls and tasks, on top of the sandbox-wide ``faults``.
    faults: FaultConfig | None = None
    #: Deliver status callbacks of tasks created with ``status_callback_urls`` (opt-in per
    #: project at Mixpanel too).
    status_callbacks: bool = False

    @field_validator("region", mode="before")
    @classmethod
    def _upper_region(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class LimitsConfig(_Model):
    """Mixpanel's limits (fact sheet, "Limits and timing")."""

    #: Accepted requests per second per project (creates, status checks and cancels); 0 = no limit.
    rate_limit_per_s: float = Field(default=1.0, ge=0)
    #: Outstanding retrieval scan budget per project, in days; 0 = no limit.
    scan_budget_days: int = Field(default=DEFAULT_SCAN_BUDGET_DAYS, ge=0)
    #: Reject deletions of ids that already have a running deletion with 409 (unattributed client).
    conflict_409: bool = False


class ResponsesConfig(_Model):
    """Choices where the fact sheet is unclear."""

    #: HTTP status of a successful create (the OpenAPI file says 201, examples show 200).
    create_status: Literal[200, 201] = 200
    #: ``task_id``: ``results: {"task_id": ...}``; ``list``: ``results: [{"tracking_id": ...}]``.
    create_shape: Literal["task_id", "list"] = "task_id"
    #: ``decimal``: long decimal numbers; ``uuid``: UUIDv4 strings.
    tracking_id_style: Literal["decimal", "uuid"] = "decimal"
    #: HTTP status of a status call for an unknown tracking id (body says NOT_FOUND either way).
    not_found_status: Literal[200, 404] = 200
    #: HTTP status when the Bearer token is wrong or expired.
    invalid_oauth_status: Literal[401, 403] = 403
    #: HTTP status for an unknown project token (or one used on another region's host).
    unknown_project_status: Literal[400, 401, 403, 404] = 403
    #: HTTP status of a cancel of an already REVOKED task (204: idempotent; 405: not cancellable).
    cancel_revoked_status: Literal[204, 405] = 204


class LifecycleConfig(_Model):
    """How tasks move PENDING -> STAGING -> STARTED -> SUCCESS | FAILURE."""

    pending_seconds: float = Field(default=5.0, ge=0)
    staging_seconds: float = Field(default=5.0, ge=0)
    started_seconds: float = Field(default=10.0, ge=0)
    #: Multiplies every duration above (0.01 runs the life cycle 100 times faster).
    time_scale: float = Field(default=1.0, ge=0)
    #: Probability that a task ends FAILURE instead of SUCCESS (decided at creation).
    failure_rate: float = Field(default=0.0, ge=0, le=1)
    #: Probability that a status call reports the transient UNKNOWN state.
    unknown_rate: float = Field(default=0.0, ge=0, le=1)
    seed: int = 0


class ExportsConfig(_Model):
    """Signed export links of finished retrievals."""

    #: Validity of a link after the retrieval finished.
    link_ttl_seconds: float = Field(default=DEFAULT_EXPORT_LINK_TTL_SECONDS, gt=0)
    #: HMAC key of the link signatures; random per start when unset.
    signing_key: SecretStr | None = None
    #: Synthetic events per distinct id in an export.
    events_per_id: int = Field(default=3, ge=0, le=1000)


class CallbacksConfig(_Model):
    """How status callbacks are delivered (sandbox/callbacks.py)."""

    #: Check the receiver's TLS certificate (against ``ca_file`` when given).
    verify_tls: bool = True
    ca_file: str | None = None
    #: A delivered status is sent again after this long (times ``lifecycle.time_scale``).
    redeliver_seconds: float = Field(default=900.0, gt=0)
    #: A refused or failed delivery is tried again after this long (times the time scale).
    retry_seconds: float = Field(default=60.0, gt=0)


class SandboxConfig(_Model):
    """The whole sandbox configuration (the file format of ``--config``)."""

    host: str = "127.0.0.1"
    #: One port per region; 0 picks a free port.
    ports: dict[Region, int] = Field(
        default_factory=lambda: {Region.US: 0, Region.EU: 0, Region.IN: 0}
    )
    projects: list[ProjectConfig] = Field(default_factory=list)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    responses: ResponsesConfig = Field(default_factory=ResponsesConfig)
    lifecycle: LifecycleConfig = Field(default_factory=LifecycleConfig)
    exports: ExportsConfig = Field(default_factory=ExportsConfig)
    faults: FaultConfig = Field(default_factory=FaultConfig)
    callbacks: CallbacksConfig = Field(default_factory=CallbacksConfig)

    @field_validator("ports", mode="before")
    @classmethod
    def _upper_port_keys(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k.upper() if isinstance(k, str) else k: v for k, v in value.items()}
        return value

    @field_validator("ports")
    @classmethod
    def _all_regions(cls, value: dict[Region, int]) -> dict[Region, int]:
        for region in Region:
            value.setdefault(region, 0)
        if any(not 0 <= port <= 65535 for port in value.values()):
            raise ValueError("ports must be between 0 and 65535")
        return value

    @model_validator(mode="after")
    def _unique_tokens(self) -> SandboxConfig:
        tokens = [project.token for project in self.projects]
        duplicates = sorted({token for token in tokens if tokens.count(token) > 1})
        if duplicates:
            raise ValueError(f"duplicate project tokens: {duplicates}")
        return self


#: The demo projects of ``default_config()``: (project token, region, OAuth token, API secret).
DEMO_PROJECTS: tuple[tuple[str, Region, str, str], ...] = (
    ("demo-token-us", Region.US, "demo-oauth-us", "demo-secret-us"),
    ("demo-token-eu", Region.EU, "demo-oauth-eu", "demo-secret-eu"),
    ("demo-token-in", Region.IN, "demo-oauth-in", "demo-secret-in"),
)


def demo_projects() -> list[ProjectConfig]:
    """One demo project per region (tokens are documented in docs/sandbox.md)."""
    return [
        ProjectConfig(
            token=token,
            region=region,
            name=f"Demo project ({region.value})",
            oauth_tokens=[OAuthTokenConfig(token=SecretStr(oauth))],
            api_secret=SecretStr(secret),
        )
        for token, region, oauth, secret in DEMO_PROJECTS
    ]


def default_config() -> SandboxConfig:
    """What ``mixpanel-sandbox`` runs without arguments: fixed ports, a demo project per region."""
    return SandboxConfig(ports=dict(DEFAULT_CLI_PORTS), projects=demo_projects())


def parse_config(data: Any) -> SandboxConfig:
    """Validate already-parsed YAML/JSON data (``None`` means an empty file)."""
    return SandboxConfig.model_validate(data or {})


def load_config(path: str | Path) -> SandboxConfig:
    """Read a YAML or JSON config file (JSON is valid YAML; ``.json`` files use the JSON parser)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    data: Any = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    return parse_config(data)


def dump_config(config: SandboxConfig, *, reveal_secrets: bool = False) -> dict[str, Any]:
    """The config as plain JSON data; secrets are masked unless ``reveal_secrets``."""
    data: dict[str, Any] = config.model_dump(mode="json")
    if reveal_secrets:
        for project, raw in zip(config.projects, data["projects"], strict=True):
            raw["api_secret"] = (
                project.api_secret.get_secret_value() if project.api_secret else None
            )
            for tok, raw_tok in zip(project.oauth_tokens, raw["oauth_tokens"], strict=True):
                raw_tok["token"] = tok.token.get_secret_value()
        key = config.exports.signing_key
        data["exports"]["signing_key"] = key.get_secret_value() if key else None
    return data
