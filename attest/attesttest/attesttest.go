// Package attesttest is a Sigstore of its own for tests: a test CA with a
// Fulcio-like intermediate that issues leaf certificates carrying GitHub
// Actions workflow identities (URI SAN, issuer and source repository
// extensions), a timestamping authority, the trusted_root.json that
// trusts them, and Sigstore bundles of DSSE-signed in-toto statements
// with an SLSA provenance v1 predicate over a digest the test chooses.
//
// It plays the part of GitHub's own Sigstore instance (the one that signs
// attestations of private repositories): evidence is an RFC 3161 signed
// timestamp, no transparency log. It imports nothing of deployd.
package attesttest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/digitorus/timestamp"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protodsse "github.com/sigstore/protobuf-specs/gen/pb-go/dsse"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"
	"google.golang.org/protobuf/encoding/protojson"
)

// Issuer is the OIDC issuer of GitHub Actions tokens, as Fulcio writes it
// into the leaf certificates it issues for workflows.
const Issuer = "https://token.actions.githubusercontent.com"

// SLSAProvenanceV1 is the predicate type of GitHub's build provenance.
const SLSAProvenanceV1 = "https://slsa.dev/provenance/v1"

// Sigstore is a test CA, its Fulcio-like intermediate and a timestamping
// authority. Its methods are safe for concurrent use.
type Sigstore struct {
	root      *x509.Certificate
	inter     *x509.Certificate
	interKey  *ecdsa.PrivateKey
	tsaInter  *x509.Certificate
	tsaLeaf   *x509.Certificate
	tsaKey    *ecdsa.PrivateKey
	createdAt time.Time
}

// New makes a fresh Sigstore. Its CA certificates are valid for about two
// hours from now, its timestamping certificate for 9 minutes: bundles must
// be signed within those 9 minutes.
func New() (*Sigstore, error) {
	rootCert, rootKey, err := ca.GenerateRootCa()
	if err != nil {
		return nil, fmt.Errorf("root CA: %w", err)
	}
	inter, interKey, err := ca.GenerateFulcioIntermediate(rootCert, rootKey)
	if err != nil {
		return nil, fmt.Errorf("fulcio intermediate: %w", err)
	}
	tsaInter, tsaInterKey, err := ca.GenerateTSAIntermediate(rootCert, rootKey)
	if err != nil {
		return nil, fmt.Errorf("TSA intermediate: %w", err)
	}
	tsaKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("TSA key: %w", err)
	}
	// sigstore-go's helper makes the leaf valid for 10 minutes from the
	// time given: from a minute ago, so timestamps can be made for 9.
	tsaLeaf, err := ca.GenerateTSALeafCert(time.Now().Add(-time.Minute), tsaKey, tsaInter, tsaInterKey)
	if err != nil {
		return nil, fmt.Errorf("TSA leaf: %w", err)
	}
	return &Sigstore{root: rootCert, inter: inter, interKey: interKey,
		tsaInter: tsaInter, tsaLeaf: tsaLeaf, tsaKey: tsaKey, createdAt: time.Now()}, nil
}

// TrustedRoot returns the trusted_root.json that trusts s: its CA for
// signing certificates and its timestamping authority, both valid from an
// hour before s was made until validUntil (zero: two hours after).
func (s *Sigstore) TrustedRoot(validUntil time.Time) ([]byte, error) {
	if validUntil.IsZero() {
		validUntil = s.createdAt.Add(2 * time.Hour)
	}
	start := s.createdAt.Add(-time.Hour)
	fulcio := &root.FulcioCertificateAuthority{
		Root: s.root, Intermediates: []*x509.Certificate{s.inter},
		ValidityPeriodStart: start, ValidityPeriodEnd: validUntil,
		URI: "https://fulcio.attesttest.invalid",
	}
	tsa := &root.SigstoreTimestampingAuthority{
		Root: s.root, Intermediates: []*x509.Certificate{s.tsaInter}, Leaf: s.tsaLeaf,
		ValidityPeriodStart: start, ValidityPeriodEnd: validUntil,
		URI: "https://timestamp.attesttest.invalid",
	}
	tr, err := root.NewTrustedRoot(root.TrustedRootMediaType01,
		[]root.CertificateAuthority{fulcio}, nil, []root.TimestampingAuthority{tsa}, nil)
	if err != nil {
		return nil, fmt.Errorf("trusted root: %w", err)
	}
	b, err := tr.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("encode trusted root: %w", err)
	}
	return b, nil
}

// WriteTrustedRoot writes TrustedRoot(validUntil) to trusted_root.json in
// a directory of the test's and returns its path, failing t on error.
func (s *Sigstore) WriteTrustedRoot(t testing.TB, validUntil time.Time) string {
	t.Helper()
	b, err := s.TrustedRoot(validUntil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "trusted_root.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Signing describes one attestation: who signed it and over what.
type Signing struct {
	// Repository is the repository the workflow ran in, "owner/name"
	// (the certificate's source repository).
	Repository string
	// Workflow is the path of the workflow that signed, in
	// SignerRepository: ".github/workflows/build.yml".
	Workflow string
	// SignerRepository holds Workflow when it is a reusable workflow of
	// another repository; empty means Repository.
	SignerRepository string
	// Ref is the git ref the workflow ran on (default "refs/heads/main").
	Ref string
	// Digest is the subject's digest, "sha256:<64 hex>".
	Digest string
	// PredicateType defaults to SLSAProvenanceV1.
	PredicateType string
	// Issuer defaults to Issuer.
	Issuer string
}

// JobWorkflowRef returns the workflow identity as GitHub's OIDC token's
// job_workflow_ref names it: "owner/repo/.github/workflows/build.yml@refs/heads/main".
func (g Signing) JobWorkflowRef() string {
	g = g.withDefaults()
	return g.SignerRepository + "/" + g.Workflow + "@" + g.Ref
}

func (g Signing) withDefaults() Signing {
	if g.SignerRepository == "" {
		g.SignerRepository = g.Repository
	}
	if g.Ref == "" {
		g.Ref = "refs/heads/main"
	}
	if g.PredicateType == "" {
		g.PredicateType = SLSAProvenanceV1
	}
	if g.Issuer == "" {
		g.Issuer = Issuer
	}
	return g
}

// Statement returns the in-toto v1 statement of g: one subject (the image,
// by its digest) and a minimal SLSA provenance v1 predicate.
func Statement(g Signing) ([]byte, error) {
	g = g.withDefaults()
	hexDigest, ok := strings.CutPrefix(g.Digest, "sha256:")
	if !ok {
		return nil, fmt.Errorf("digest %q is not sha256:<hex>", g.Digest)
	}
	st := map[string]any{
		"_type":         "https://in-toto.io/Statement/v1",
		"subject":       []any{map[string]any{"name": "image", "digest": map[string]string{"sha256": hexDigest}}},
		"predicateType": g.PredicateType,
		"predicate": map[string]any{
			"buildDefinition": map[string]any{
				"buildType": "https://actions.github.io/buildtypes/workflow/v1",
				"externalParameters": map[string]any{"workflow": map[string]string{
					"ref": g.Ref, "repository": "https://github.com/" + g.Repository, "path": g.Workflow}},
			},
			"runDetails": map[string]any{"builder": map[string]string{"id": "https://github.com/actions/runner/github-hosted"}},
		},
	}
	b, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("encode statement: %w", err)
	}
	return b, nil
}

// Bundle signs g's statement with a fresh leaf certificate for g's
// workflow identity, timestamps the signature and returns the Sigstore
// bundle (v0.3 JSON), as GitHub's attestations API serves it.
func (s *Sigstore) Bundle(g Signing) ([]byte, error) {
	g = g.withDefaults()
	stmt, err := Statement(g)
	if err != nil {
		return nil, err
	}
	return s.BundleOf(g, stmt)
}

// BundleOf signs payload (an in-toto statement) as g's workflow, like
// Bundle, for tests that need a statement Bundle does not write.
func (s *Sigstore) BundleOf(g Signing, payload []byte) ([]byte, error) {
	g = g.withDefaults()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("leaf key: %w", err)
	}
	leaf, err := s.leaf(g, &key.PublicKey)
	if err != nil {
		return nil, err
	}
	const payloadType = "application/vnd.in-toto+json"
	pae := fmt.Sprintf("DSSEv1 %d %s %d %s", len(payloadType), payloadType, len(payload), payload)
	sum := sha256.Sum256([]byte(pae))
	sig, err := ecdsa.SignASN1(rand.Reader, key, sum[:])
	if err != nil {
		return nil, fmt.Errorf("sign statement: %w", err)
	}
	tsr, err := s.timestamp(sig)
	if err != nil {
		return nil, err
	}
	pb := &protobundle.Bundle{
		MediaType: "application/vnd.dev.sigstore.bundle.v0.3+json",
		VerificationMaterial: &protobundle.VerificationMaterial{
			Content: &protobundle.VerificationMaterial_Certificate{Certificate: &protocommon.X509Certificate{RawBytes: leaf.Raw}},
			TimestampVerificationData: &protobundle.TimestampVerificationData{
				Rfc3161Timestamps: []*protocommon.RFC3161SignedTimestamp{{SignedTimestamp: tsr}},
			},
		},
		Content: &protobundle.Bundle_DsseEnvelope{DsseEnvelope: &protodsse.Envelope{
			Payload: payload, PayloadType: payloadType,
			Signatures: []*protodsse.Signature{{Sig: sig}},
		}},
	}
	b, err := protojson.Marshal(pb)
	if err != nil {
		return nil, fmt.Errorf("encode bundle: %w", err)
	}
	return b, nil
}

// Tamper returns bundle with its signed statement altered after signing
// (the first "build.yml" becomes "bui1d.yml", else a byte of the payload
// changes): a bundle whose signature no longer covers its payload.
func Tamper(bundle []byte) ([]byte, error) {
	var pb protobundle.Bundle
	if err := protojson.Unmarshal(bundle, &pb); err != nil {
		return nil, fmt.Errorf("decode bundle: %w", err)
	}
	env := pb.GetDsseEnvelope()
	if env == nil || len(env.Payload) == 0 {
		return nil, fmt.Errorf("bundle has no DSSE payload")
	}
	if p := bytes.Replace(env.Payload, []byte("build.yml"), []byte("bui1d.yml"), 1); !bytes.Equal(p, env.Payload) {
		env.Payload = p
	} else {
		env.Payload[len(env.Payload)/2] ^= 1
	}
	b, err := protojson.Marshal(&pb)
	if err != nil {
		return nil, fmt.Errorf("encode bundle: %w", err)
	}
	return b, nil
}

// Fulcio's certificate extensions (OIDs 1.3.6.1.4.1.57264.1.*).
var (
	oidIssuerV2           = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 8}
	oidBuildSignerURI     = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 9}
	oidSourceRepoURI      = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 12}
	oidSourceRepoRef      = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 14}
	oidBuildConfigURI     = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 18}
	oidRunnerEnvironment  = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 11}
	oidSourceRepoDigest   = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 13}
	oidRunInvocationURI   = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 21}
	oidSourceRepoOwnerURI = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 16}
)

// leaf issues a Fulcio-like certificate for g's workflow identity, valid
// for 10 minutes from a minute ago.
func (s *Sigstore) leaf(g Signing, pub crypto.PublicKey) (*x509.Certificate, error) {
	san, err := url.Parse("https://github.com/" + g.JobWorkflowRef())
	if err != nil {
		return nil, fmt.Errorf("workflow identity: %w", err)
	}
	owner, _, _ := strings.Cut(g.Repository, "/")
	commit := sha256.Sum256([]byte(g.Repository + g.Ref))
	exts := []struct {
		id  asn1.ObjectIdentifier
		val string
	}{
		{oidIssuerV2, g.Issuer},
		{oidBuildSignerURI, san.String()},
		{oidRunnerEnvironment, "github-hosted"},
		{oidSourceRepoURI, "https://github.com/" + g.Repository},
		{oidSourceRepoDigest, hex.EncodeToString(commit[:20])},
		{oidSourceRepoRef, g.Ref},
		{oidSourceRepoOwnerURI, "https://github.com/" + owner},
		{oidBuildConfigURI, "https://github.com/" + g.Repository + "/" + g.Workflow + "@" + g.Ref},
		{oidRunInvocationURI, "https://github.com/" + g.Repository + "/actions/runs/1/attempts/1"},
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		URIs:         []*url.URL{san},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(9 * time.Minute),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
	}
	for _, e := range exts {
		v, err := asn1.MarshalWithParams(e.val, "utf8")
		if err != nil {
			return nil, fmt.Errorf("extension %v: %w", e.id, err)
		}
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: e.id, Value: v})
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.inter, pub, s.interKey)
	if err != nil {
		return nil, fmt.Errorf("issue leaf certificate: %w", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse leaf certificate: %w", err)
	}
	return c, nil
}

// timestamp returns an RFC 3161 response of s's timestamping authority
// over sig, at the current time.
func (s *Sigstore) timestamp(sig []byte) ([]byte, error) {
	req, err := timestamp.CreateRequest(bytes.NewReader(sig), &timestamp.RequestOptions{Hash: crypto.SHA256})
	if err != nil {
		return nil, fmt.Errorf("timestamp request: %w", err)
	}
	parsed, err := timestamp.ParseRequest(req)
	if err != nil {
		return nil, fmt.Errorf("timestamp request: %w", err)
	}
	ts := timestamp.Timestamp{
		HashAlgorithm: parsed.HashAlgorithm,
		HashedMessage: parsed.HashedMessage,
		Time:          time.Now(),
		Policy:        asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 2},
	}
	resp, err := ts.CreateResponseWithOpts(s.tsaLeaf, s.tsaKey, crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("timestamp response: %w", err)
	}
	return resp, nil
}
