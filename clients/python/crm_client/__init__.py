"""crm_client: call the crm-backbone HTTP API (channel front ends, agents) and read its topics
(subscribing teams).

`Client` and `AsyncClient` call the API; `crm_client.events` is the subscribers' kit.
"""

__version__ = "1.0.0"  # the API's version (info.version of contracts/openapi/*.json); a test keeps them equal

from crm_client._core import Retry
from crm_client.client import AsyncClient, Client
from crm_client.errors import (
    BadRequest,
    Conflict,
    ConnectionFailed,
    CrmError,
    Forbidden,
    Gone,
    NotFound,
    PayloadTooLarge,
    PreconditionRequired,
    RateLimited,
    Unauthorized,
    Unavailable,
    ValidationFailed,
    WaitTimeout,
)
from crm_client.models import (
    Accepted,
    AgentChange,
    Campaign,
    CampaignList,
    CampaignResults,
    Case,
    CaseChange,
    CaseList,
    CaseRow,
    Customer,
    CustomerFieldsChange,
    CustomerTagsChange,
    FieldError,
    KpiGroup,
    Kpis,
    MergeResult,
    Queue,
    Timeline,
    TimelineEvent,
)

__all__ = [
    "Accepted",
    "AgentChange",
    "AsyncClient",
    "BadRequest",
    "Campaign",
    "CampaignList",
    "CampaignResults",
    "Case",
    "CaseChange",
    "CaseList",
    "CaseRow",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "CrmError",
    "Customer",
    "CustomerFieldsChange",
    "CustomerTagsChange",
    "FieldError",
    "Forbidden",
    "Gone",
    "KpiGroup",
    "Kpis",
    "MergeResult",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionRequired",
    "Queue",
    "RateLimited",
    "Retry",
    "Timeline",
    "TimelineEvent",
    "Unauthorized",
    "Unavailable",
    "ValidationFailed",
    "WaitTimeout",
    "__version__",
]
