-- Deliveries deployd asked GitHub to redeliver from the App's delivery log:
-- one row per delivery id, so that each is asked for once.
CREATE TABLE redeliveries (
	delivery_id  TEXT PRIMARY KEY,
	attempt_id   INTEGER NOT NULL,
	requested_at TEXT NOT NULL
) STRICT;

-- How far the delivery log has been read: the newest attempt's time at the
-- last complete pass. One row at most.
CREATE TABLE delivery_log_mark (
	id        INTEGER PRIMARY KEY CHECK (id = 1),
	read_upto TEXT NOT NULL
) STRICT;
