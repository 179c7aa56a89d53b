package deployer

import "time"

// HostStatus is what runs for a service on one fleet host, as the host's
// agent last reported it.
type HostStatus struct {
	Service string `json:"service"`
	Host    string `json:"host"`
	// Tag and Digest are what runs there: the last digest the host
	// deployed successfully, empty before that.
	Tag    string `json:"tag,omitempty"`
	Digest string `json:"digest,omitempty"`
	// State and DeploymentID are those of the host's newest deployment.
	State        State     `json:"state"`
	DeploymentID int64     `json:"deployment_id"`
	UpdatedAt    time.Time `json:"updated_at"`
}
