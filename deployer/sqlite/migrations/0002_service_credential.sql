-- Which registry credential source the last deployment of a service used,
-- and why it was not the first one configured (a refused App token, say).
ALTER TABLE services ADD COLUMN credential TEXT NOT NULL DEFAULT '';
ALTER TABLE services ADD COLUMN credential_note TEXT NOT NULL DEFAULT '';
