-- Ids (jti) of the GitHub Actions OIDC tokens the deploy API accepted, each
-- kept until its token expires, so that a token is accepted once even
-- across restarts. Expired rows are deleted as new ones are inserted.
CREATE TABLE used_tokens (
	jti        TEXT PRIMARY KEY,
	expires_at TEXT NOT NULL
) STRICT, WITHOUT ROWID;

CREATE INDEX used_tokens_expires_at ON used_tokens (expires_at);
