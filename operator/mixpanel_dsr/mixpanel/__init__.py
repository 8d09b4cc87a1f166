"""Everything the operator knows of Mixpanel's GDPR API: shared types and the HTTP client."""

from .budget import DEFAULT_INTERVAL, BudgetRegistry, RequestBudget, default_registry
from .client import MixpanelClient, OAuthTokenSource
from .errors import (
    AmbiguousCreateError,
    AuthenticationError,
    ConflictError,
    DeadlineExceededError,
    InvalidRequestError,
    MixpanelError,
    NotCancellableError,
    NotFoundError,
    RateLimitedError,
    TransientError,
)
from .redaction import id_digest
from .responses import CreatedTask, TaskStatus
from .retry import RetryPolicy
from .types import (
    MAX_IDS_PER_REQUEST,
    REGION_BASE_URLS,
    ComplianceType,
    DisclosureType,
    Region,
    TaskState,
)

__all__ = [
    "DEFAULT_INTERVAL",
    "MAX_IDS_PER_REQUEST",
    "REGION_BASE_URLS",
    "AmbiguousCreateError",
    "AuthenticationError",
    "BudgetRegistry",
    "ComplianceType",
    "ConflictError",
    "CreatedTask",
    "DeadlineExceededError",
    "DisclosureType",
    "InvalidRequestError",
    "MixpanelClient",
    "MixpanelError",
    "NotCancellableError",
    "NotFoundError",
    "OAuthTokenSource",
    "RateLimitedError",
    "Region",
    "RequestBudget",
    "RetryPolicy",
    "TaskState",
    "TaskStatus",
    "TransientError",
    "default_registry",
    "id_digest",
]
