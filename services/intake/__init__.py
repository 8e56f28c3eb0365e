"""The intake service: receives interactions from channel front ends, resolves the customer,
stores each accepted event durably and publishes it through the outbox."""
