-- Webhook deliveries as received, and what came of each. An empty delivery
-- id or body hash is stored as NULL so that it never counts as a duplicate.
CREATE TABLE deliveries (
	seq         INTEGER PRIMARY KEY,
	delivery_id TEXT UNIQUE,
	event       TEXT NOT NULL,
	action      TEXT NOT NULL DEFAULT '',
	body_sha256 TEXT UNIQUE,
	received_at TEXT NOT NULL,
	result      TEXT NOT NULL,
	reason      TEXT NOT NULL DEFAULT ''
) STRICT;

-- Deployments, queued ones included: the queue lives here. AUTOINCREMENT so
-- that an id, once shown to a person, never names another deployment.
CREATE TABLE deployments (
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
	state               TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'unchanged',
	                        'failed', 'rolled_back', 'superseded', 'interrupted')),
	queued_at           TEXT NOT NULL,
	started_at          TEXT,
	finished_at         TEXT,
	error_class         TEXT NOT NULL DEFAULT '',
	error               TEXT NOT NULL DEFAULT '',
	hint                TEXT NOT NULL DEFAULT ''
) STRICT;

CREATE INDEX deployments_by_service ON deployments (service, id);
CREATE INDEX deployments_queued ON deployments (service, id) WHERE state = 'queued';
CREATE INDEX deployments_running ON deployments (id) WHERE state = 'running';
CREATE INDEX deployments_by_delivery ON deployments (delivery_seq) WHERE delivery_seq IS NOT NULL;

-- The step log of each deployment, in order.
CREATE TABLE deployment_steps (
	deployment_id INTEGER NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
	seq           INTEGER NOT NULL,
	name          TEXT NOT NULL,
	started_at    TEXT NOT NULL,
	duration_ns   INTEGER NOT NULL,
	outcome       TEXT NOT NULL,
	message       TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (deployment_id, seq)
) STRICT, WITHOUT ROWID;

-- What runs for each service now.
CREATE TABLE services (
	name               TEXT PRIMARY KEY,
	tag                TEXT NOT NULL DEFAULT '',
	digest             TEXT NOT NULL DEFAULT '',
	previous_digest    TEXT NOT NULL DEFAULT '',
	container          TEXT NOT NULL DEFAULT '',
	last_deployment_id INTEGER NOT NULL DEFAULT 0,
	last_run_number    INTEGER NOT NULL DEFAULT 0,
	degraded           INTEGER NOT NULL DEFAULT 0 CHECK (degraded IN (0, 1)),
	updated_at         TEXT NOT NULL
) STRICT, WITHOUT ROWID;

-- Every digest that ran for a service. replaced_at is NULL while the digest
-- runs and set once another digest took its place: a webhook must never bring
-- a replaced digest back.
CREATE TABLE service_digests (
	service     TEXT NOT NULL,
	digest      TEXT NOT NULL,
	last_ran_at TEXT NOT NULL,
	replaced_at TEXT,
	PRIMARY KEY (service, digest)
) STRICT, WITHOUT ROWID;
