package deployer_test

import (
	"context"
	"strings"
	"testing"

	"github.com/deployd/deployd/deployer"
)

// TestGuardScope pins who the never-backwards policy holds back at each
// point: webhooks at intake and before the switch, reconcile before the
// switch only, an operator's deploy or rollback never.
func TestGuardScope(t *testing.T) {
	ctx := context.Background()
	store := openStore(t, t.TempDir())
	old, current := "sha256:"+strings.Repeat("a", 64), "sha256:"+strings.Repeat("b", 64)
	for _, d := range []string{old, current} {
		if err := store.SetServiceStatus(ctx, deployer.ServiceStatus{Name: "backend", Digest: d}); err != nil {
			t.Fatal(err)
		}
	}
	g := deployer.NewGuard(store)
	for _, tc := range []struct {
		kind                   deployer.TriggerKind
		atIntake, beforeSwitch bool
	}{
		{deployer.TriggerWebhook, true, true},
		{deployer.TriggerReconcile, false, true},
		{deployer.TriggerManual, false, false},
		{deployer.TriggerRollback, false, false},
	} {
		trigger := deployer.Trigger{Kind: tc.kind}
		reason, err := g.Request(ctx, deployer.Request{Service: "backend", Tag: "latest", Digest: old, Trigger: trigger})
		if err != nil {
			t.Fatal(err)
		}
		if held := reason != ""; held != tc.atIntake {
			t.Errorf("%s request for a replaced digest: held back %v (%q), want %v", tc.kind, held, reason, tc.atIntake)
		}
		reason, err = g.Digest(ctx, "backend", trigger, old)
		if err != nil {
			t.Fatal(err)
		}
		if held := reason != ""; held != tc.beforeSwitch {
			t.Errorf("%s switch to a replaced digest: held back %v (%q), want %v", tc.kind, held, reason, tc.beforeSwitch)
		}
		if reason, err := g.Digest(ctx, "backend", trigger, current); err != nil || reason != "" {
			t.Errorf("%s switch to the running digest held back: %q %v", tc.kind, reason, err)
		}
	}
}
