-- migrate: foreign_keys off
-- The deployments table is rebuilt with the same columns and rows; only its
-- state CHECK changes. SQLite evaluates "state IN (eight values)" by building
-- a temporary b-tree of the values for every row written, which cost a good
-- part of each queued deployment; the same test written as comparisons costs
-- almost nothing. A CHECK cannot be altered, hence the rebuild, done as
-- https://www.sqlite.org/lang_altertable.html#otheralter says:
-- deployment_steps.deployment_id names the table, which the new one replaces
-- under the same name, and every id is kept.
CREATE TABLE deployments_new (
	id                  INTEGER PRIMARY KEY AUTOINCREMENT,
	service             TEXT NOT NULL,
	delivery_seq        INTEGER REFERENCES deliveries (seq),
	trigger_kind        TEXT NOT NULL,
	trigger_delivery_id TEXT NOT NULL DEFAULT '',
	trigger_event       TEXT NOT NULL DEFAULT '',
	trigger_subject     TEXT NOT NULL DEFAULT '',
	installation_id     INTEGER NOT NULL DEFAULT 0,
	run_id              INTEGER NOT NULL DEFAULT 0,
	run_number          INTEGER NOT NULL DEFAULT 0,
	tag                 TEXT NOT NULL DEFAULT '',
	digest              TEXT NOT NULL DEFAULT '',
	force               INTEGER NOT NULL DEFAULT 0 CHECK (force IN (0, 1)),
	dry_run             INTEGER NOT NULL DEFAULT 0 CHECK (dry_run IN (0, 1)),
	state               TEXT NOT NULL CHECK (state = 'queued' OR state = 'running'
	                        OR state = 'succeeded' OR state = 'unchanged' OR state = 'failed'
	                        OR state = 'rolled_back' OR state = 'superseded' OR state = 'interrupted'),
	queued_at           TEXT NOT NULL,
	started_at          TEXT,
	finished_at         TEXT,
	error_class         TEXT NOT NULL DEFAULT '',
	error               TEXT NOT NULL DEFAULT '',
	hint                TEXT NOT NULL DEFAULT ''
) STRICT;

INSERT INTO deployments_new (id, service, delivery_seq, trigger_kind, trigger_delivery_id,
		trigger_event, trigger_subject, installation_id, run_id, run_number, tag, digest, force,
		dry_run, state, queued_at, started_at, finished_at, error_class, error, hint)
	SELECT id, service, delivery_seq, trigger_kind, trigger_delivery_id,
		trigger_event, trigger_subject, installation_id, run_id, run_number, tag, digest, force,
		dry_run, state, queued_at, started_at, finished_at, error_class, error, hint
	FROM deployments;

-- AUTOINCREMENT promises that an id is never given twice: carry the highest
-- id ever given over, even if its row were gone.
DELETE FROM sqlite_sequence WHERE name = 'deployments_new';
INSERT INTO sqlite_sequence (name, seq)
	SELECT 'deployments_new', MAX(seq) FROM (
		SELECT seq FROM sqlite_sequence WHERE name = 'deployments'
		UNION ALL SELECT MAX(id) FROM deployments_new)
	HAVING MAX(seq) IS NOT NULL;

DROP TABLE deployments;

ALTER TABLE deployments_new RENAME TO deployments;

CREATE INDEX deployments_by_service ON deployments (service, id);
CREATE INDEX deployments_queued ON deployments (service, id) WHERE state = 'queued';
CREATE INDEX deployments_running ON deployments (id) WHERE state = 'running';
CREATE INDEX deployments_by_delivery ON deployments (delivery_seq) WHERE delivery_seq IS NOT NULL;
