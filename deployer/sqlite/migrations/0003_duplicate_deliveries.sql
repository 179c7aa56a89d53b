-- migrate: foreign_keys off
-- Duplicate deliveries are recorded too, with result 'duplicate', so a
-- delivery id or body hash is unique only among the deliveries that are not
-- duplicates. SQLite cannot drop a column's UNIQUE constraint, so the table
-- is rebuilt as https://www.sqlite.org/lang_altertable.html#otheralter says:
-- the new table takes the old one's name, which deployments.delivery_seq
-- names, and every seq is kept.
CREATE TABLE deliveries_new (
	seq         INTEGER PRIMARY KEY,
	delivery_id TEXT,
	event       TEXT NOT NULL,
	action      TEXT NOT NULL DEFAULT '',
	body_sha256 TEXT,
	received_at TEXT NOT NULL,
	result      TEXT NOT NULL,
	reason      TEXT NOT NULL DEFAULT ''
) STRICT;

INSERT INTO deliveries_new (seq, delivery_id, event, action, body_sha256, received_at, result, reason)
	SELECT seq, delivery_id, event, action, body_sha256, received_at, result, reason FROM deliveries;

DROP TABLE deliveries;

ALTER TABLE deliveries_new RENAME TO deliveries;

-- An empty delivery id or body hash is still stored as NULL, which these
-- indexes never compare equal.
CREATE UNIQUE INDEX deliveries_delivery_id ON deliveries (delivery_id) WHERE result <> 'duplicate';
CREATE UNIQUE INDEX deliveries_body_sha256 ON deliveries (body_sha256) WHERE result <> 'duplicate';
