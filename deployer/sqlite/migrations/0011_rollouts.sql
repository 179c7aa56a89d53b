-- Fleet rollouts: a hub's deployment of a service with fleet hosts sends
-- the new version to each host; each host's deployment is a row of
-- deployments of its own (host, rollout_id set, never queued), grouped
-- under the rollout of the deployment the queue ran.
CREATE TABLE rollouts (
	id            INTEGER PRIMARY KEY AUTOINCREMENT,
	deployment_id INTEGER NOT NULL UNIQUE REFERENCES deployments (id),
	service       TEXT NOT NULL,
	policy        TEXT NOT NULL,
	digest        TEXT NOT NULL,
	created_at    TEXT NOT NULL
) STRICT;

ALTER TABLE deployments ADD COLUMN host TEXT NOT NULL DEFAULT '';
ALTER TABLE deployments ADD COLUMN rollout_id INTEGER REFERENCES rollouts (id);

CREATE INDEX deployments_by_rollout ON deployments (rollout_id, id) WHERE rollout_id IS NOT NULL;

-- What runs for each service on each fleet host, as the host last reported.
CREATE TABLE host_services (
	service       TEXT NOT NULL,
	host          TEXT NOT NULL,
	tag           TEXT NOT NULL DEFAULT '',
	digest        TEXT NOT NULL DEFAULT '',
	state         TEXT NOT NULL,
	deployment_id INTEGER NOT NULL,
	updated_at    TEXT NOT NULL,
	PRIMARY KEY (service, host)
) STRICT, WITHOUT ROWID;
