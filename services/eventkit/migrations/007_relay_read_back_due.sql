-- After a republish (the broker forgot what it had acknowledged), the relay reads its topics back
-- and queues again what a reader would not get (outbox.py, amnesia.py). That read is due until it
-- finds everything up to `upto`: kept here, written in the republish's own transaction, so a
-- relay killed between the republish and the read leaves it to whichever relay leads next.
CREATE TABLE relay_read_back_due (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    upto bigint NOT NULL,   -- the highest position the republish queued
    rounds int NOT NULL DEFAULT 0  -- reads made so far; each queues again only what the last missed
);
