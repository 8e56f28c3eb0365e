-- Agents: the read model of the agent streams (`agent-<agent_id>` in `events`), rewritten in the
-- same transaction as every append. Load (open cases owned) is counted from `cases`, never kept.
CREATE TABLE agents (
    agent_id         text PRIMARY KEY,
    version          integer     NOT NULL,
    name             text        NOT NULL,
    teams            text[]      NOT NULL,
    capacity         integer     NOT NULL,
    skills           text[]      NOT NULL,
    status           text        NOT NULL,  -- online | away | offline
    updated_at       timestamptz NOT NULL,
    -- Idle since: the last automatic assignment to the agent, or coming online if later. The
    -- least loaded agents tie-break on it, longest idle first.
    idle_since       timestamptz
);
CREATE INDEX agents_teams ON agents USING gin (teams);

-- The queues: a team's unassigned open cases, found without scanning every case.
CREATE INDEX cases_unassigned ON cases (team, opened_at) WHERE owner IS NULL AND status IN ('new', 'open', 'pending');
