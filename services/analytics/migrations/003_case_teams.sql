-- Case KPIs per team: the team a case belongs to (from its opening, then its last assignment),
-- when it was first assigned (handle time runs from there to resolution), and the team of a
-- survey's case.
ALTER TABLE kpi_cases ADD COLUMN team text NOT NULL DEFAULT 'unknown';
ALTER TABLE kpi_cases ADD COLUMN assigned_at timestamptz;
ALTER TABLE kpi_surveys ADD COLUMN team text;
