package deployer

// Log keys used across deployd's structured logs. They are stable: log
// queries and alerts rely on them.
const (
	KeyService      = "service"
	KeyDeploymentID = "deployment_id"
	KeyDeliveryID   = "delivery_id"
	KeyInstallation = "installation_id"
	KeyStep         = "step"
)
