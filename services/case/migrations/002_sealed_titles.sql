-- A case title is what an agent wrote, so it is personal data (SPEC §9): `title` holds the sealed
-- token and `title_sealed_by` the customer whose data key opens it (NULL: a title from before).
ALTER TABLE cases ADD COLUMN title_sealed_by text;
