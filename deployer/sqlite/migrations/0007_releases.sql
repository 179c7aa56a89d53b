-- Release sets: the images of one commit of a set's services go live
-- together. A release is one commit of a set; its members are the services
-- it deploys, with the tag (and digest) a delivery named for each, and
-- their deployments carry the release's id. A waiting release holds package
-- events until the set's gate (the commit's successful workflow run)
-- arrives, or until it expires.
CREATE TABLE releases (
	id              INTEGER PRIMARY KEY AUTOINCREMENT,
	set_name        TEXT NOT NULL,
	commit_sha      TEXT NOT NULL,
	state           TEXT NOT NULL CHECK (state = 'waiting' OR state = 'queued' OR state = 'running'
	                    OR state = 'succeeded' OR state = 'failed' OR state = 'rolled_back'
	                    OR state = 'superseded' OR state = 'expired' OR state = 'interrupted'),
	failed_member   TEXT NOT NULL DEFAULT '',
	reason          TEXT NOT NULL DEFAULT '',
	delivery_id     TEXT NOT NULL DEFAULT '',
	event           TEXT NOT NULL DEFAULT '',
	installation_id INTEGER NOT NULL DEFAULT 0,
	run_id          INTEGER NOT NULL DEFAULT 0,
	run_number      INTEGER NOT NULL DEFAULT 0,
	created_at      TEXT NOT NULL,
	started_at      TEXT,
	finished_at     TEXT
) STRICT;

CREATE INDEX releases_by_set ON releases (set_name, id);
CREATE INDEX releases_by_commit ON releases (set_name, commit_sha, id);

CREATE TABLE release_members (
	release_id  INTEGER NOT NULL REFERENCES releases (id),
	service     TEXT NOT NULL,
	tag         TEXT NOT NULL DEFAULT '',
	digest      TEXT NOT NULL DEFAULT '',
	delivery_id TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (release_id, service)
) STRICT, WITHOUT ROWID;

-- The release a deployment is a member of, 0 for none. Members are looked up
-- by service (deployments_by_service), so no index of its own.
ALTER TABLE deployments ADD COLUMN release_id INTEGER NOT NULL DEFAULT 0;
