-- The outcome of a deployment's verify-image step, for the deployments of
-- services that verify their images' attestations: deployer.Verification
-- as JSON (mode, verified, signer workflow, predicate type, when, problem).
CREATE TABLE deployment_verifications (
	deployment_id INTEGER PRIMARY KEY REFERENCES deployments (id) ON DELETE CASCADE,
	verification  TEXT NOT NULL
) STRICT;
