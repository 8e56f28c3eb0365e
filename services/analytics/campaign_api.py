"""analytics' campaign routes: a campaign's results (the seeds' campaign metrics)."""

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field
from servicekit.auth import require
from servicekit.http import ApiError
from servicekit.inputs import SafeLine

from analytics import campaign_store
from analytics.deps import AnalyticsRuntime

router = APIRouter()


class ChannelResults(BaseModel):
    sent: int = Field(description="Customers the campaign was sent to (the channel accepted it)")
    delivered: int = Field(description="Customers with a delivery receipt")
    responded: int = Field(description="Customers with an attributed inbound interaction")
    response_rate: float | None = Field(
        description="Responders the campaign was sent to / sent, 0 to 1; null: nothing sent"
    )
    conversions: int = Field(description="Attributed purchases")
    revenue: float = Field(description="Sum of metadata.amount of the attributed purchases")
    unsubscribed: int = Field(description="Customers who withdrew marketing consent within the window")


class CampaignResults(ChannelResults):
    campaign_id: str
    name: str
    status: str
    audience_size: int | None = Field(description="null: the audience is not fixed yet")
    by_channel: dict[str, ChannelResults] = Field(description="By the channel the campaign reached them on")


@router.get(
    "/v1/campaigns/{campaign_id}/results",
    operation_id="getCampaignResults",
    tags=["campaigns"],
    dependencies=[require("campaigns", "agent", "ops")],
    summary="A campaign's response rate, conversions, revenue and unsubscribes, in total and by channel",
    responses={
        200: {"model": CampaignResults},
        404: {"description": "campaign_not_found: analytics knows no campaign of this id (yet)"},
    },
)
async def get_campaign_results(
    rt: AnalyticsRuntime, campaign_id: Annotated[SafeLine, Path(min_length=1, max_length=64)]
) -> Any:
    async with rt.db.acquire() as conn:
        row = await campaign_store.campaign(conn, campaign_id)
        if row is None:
            raise ApiError(404, "campaign_not_found", f"analytics knows no campaign {campaign_id}")
        results = await campaign_store.results(conn, campaign_id)
    return {
        "campaign_id": campaign_id,
        "name": row["name"],
        "status": row["status"],
        "audience_size": row["audience_size"],
        **results,
    }
