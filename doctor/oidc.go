package doctor

import (
	"context"
	"errors"
	"fmt"

	"github.com/deployd/deployd/auth/oidc"
	"github.com/deployd/deployd/configs"
)

// checkOIDC checks, when api.oidc is set, that its issuer's discovery
// document and key set can be fetched, and that the document names the
// issuer. An unreachable issuer is a warning: deployd keeps trying, and a
// running deployd verifies tokens with the keys it has cached.
func (d *checker) checkOIDC(ctx context.Context, cfg *configs.Config) {
	const check = "OIDC issuer"
	o := cfg.API.OIDC
	if o == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	info, err := oidc.CheckIssuer(ctx, nil, o.Issuer)
	switch {
	case errors.Is(err, oidc.ErrIssuerUnreachable):
		d.report(statusWarn, check, fmt.Sprintf("%s: %v", o.Issuer, err),
			"check that this host reaches "+o.Issuer+" (proxy, firewall, DNS); until it does, a deployd that starts refuses OIDC tokens with 503, and a running one uses the keys it has cached")
	case err != nil:
		d.report(statusFail, check, fmt.Sprintf("%s: %v", o.Issuer, err),
			"set api.oidc.issuer to the issuer exactly as its discovery document names it (GitHub's is "+oidc.GitHubIssuer+")")
	default:
		d.report(statusOK, check, fmt.Sprintf("%s: discovery document and key set (%s) fetched, %s", o.Issuer, info.JWKSURI, plural(info.RSAKeys, "RSA key")), "")
	}
}
