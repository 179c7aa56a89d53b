-- The id of the newest workflow run that deployed a service. Run ids grow
-- across all of a repository's workflows, unlike run numbers, which count
-- per workflow; webhooks for older runs are held back by it.
ALTER TABLE services ADD COLUMN last_run_id INTEGER NOT NULL DEFAULT 0;
