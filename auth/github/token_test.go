package github_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/deployd/deployd/auth/github"
	"github.com/rs/zerolog"
)

// assertRedacted checks every printed form of v.
func assertRedacted(t *testing.T, v any, secrets ...string) {
	t.Helper()
	var forms []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
		forms = append(forms, fmt.Sprintf(verb, v))
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("json: %v", err)
	}
	forms = append(forms, string(b))
	var buf strings.Builder
	zl := zerolog.New(&buf)
	zl.Info().Interface("v", v).Msg("x")
	forms = append(forms, buf.String())
	for _, f := range forms {
		for _, s := range secrets {
			if s != "" && strings.Contains(f, s) {
				t.Errorf("secret printed in %q", f)
			}
		}
	}
}

func TestTokenNeverPrints(t *testing.T) {
	const secret = "ghs_s3cr3t-value"
	tok := github.NewToken(secret)
	if tok.Reveal() != secret || tok.IsZero() {
		t.Fatal("Reveal lost the value")
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
		if got := fmt.Sprintf(verb, tok); got != "[redacted]" {
			t.Errorf("%s = %q", verb, got)
		}
	}
	if b, _ := json.Marshal(tok); string(b) != `"[redacted]"` {
		t.Errorf("json = %s", b)
	}
	if b, _ := tok.MarshalText(); string(b) != "[redacted]" {
		t.Errorf("text = %s", b)
	}
	var buf strings.Builder
	zl := zerolog.New(&buf)
	zl.Info().Stringer("s", tok).Interface("i", tok).Any("a", tok).Msg("x")
	if strings.Contains(buf.String(), secret) || !strings.Contains(buf.String(), "[redacted]") {
		t.Errorf("zerolog: %s", buf.String())
	}
	// In structs, exported or not, by value or by pointer.
	type inner struct {
		tok   github.Token
		Token github.Token
		p     *github.Token
	}
	assertRedacted(t, inner{tok: tok, Token: tok, p: &tok}, secret)
	assertRedacted(t, &inner{tok: tok, Token: tok, p: &tok}, secret)
	assertRedacted(t, map[string]github.Token{"k": tok}, secret)
	assertRedacted(t, []github.Token{tok}, secret)

	if !(github.Token{}).IsZero() || (github.Token{}).Reveal() != "" {
		t.Error("zero Token is not empty")
	}
}
