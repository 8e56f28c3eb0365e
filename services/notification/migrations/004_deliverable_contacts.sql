-- Identity trust (SPEC §14, docs/identity-trust.md): a customer's message goes only to an address
-- that is verified, or that the customer used themselves (the inbound interaction that created
-- them). A claimed address is kept, for agents to see, but never chosen. Rows from before trust
-- existed came from events that were all trusted then: they stay deliverable.
ALTER TABLE notification_contacts ADD COLUMN deliverable boolean NOT NULL DEFAULT true;
