"""crm_client: call the crm-backbone HTTP API (channel front ends, agents) and read its topics
(subscribing teams)."""

__version__ = "1.0.0"
