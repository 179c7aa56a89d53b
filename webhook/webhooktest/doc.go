// Package webhooktest holds the reference webhook handler and the delivery
// generator shared by deployd's intake benchmarks (webhook and cmd/deployd)
// and the load test (scripts/loadtest).
//
// BareHandler is the baseline deployd's intake is measured against: a plain
// net/http handler that reads the body under the same cap, checks the
// HMAC-SHA256 signature, unmarshals the fields deployd's matcher reads and
// answers 202 with a JSON body. No router, no store, no log.
//
// Deliveries makes unique signed deliveries of a JSON fixture, compacted as
// GitHub sends it and with a nonce field, so that deduplication never
// short-circuits. Sign computes an X-Hub-Signature-256 value.
//
// The package must not import webhook: webhook's own benchmarks use it.
package webhooktest
