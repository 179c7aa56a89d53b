package server_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/deployd/deployd/deployer"
)

// releaseRowJS reads release id's row as "set | commit | state | failed
// member (or -) | reason | service:state[:rollback],…", or "none".
const releaseRowJS = `(() => { const r = document.querySelector('[data-release="%d"]'); if (!r) return "none";
	const f = (el, n) => { const e = el.querySelector('[data-field="' + n + '"]'); return e ? e.textContent : "?"; };
	const failed = r.querySelector('[data-part="failed"]');
	const reason = r.querySelector('[data-field="reason"]');
	return [f(r, "set"), f(r, "commit"), f(r, "state"), failed.hidden ? "-" : f(r, "failed_member"), reason.hidden ? "-" : reason.textContent,
		[...r.querySelectorAll("[data-member]")].map(m => {
			const rb = m.querySelector('[data-field="rollback"]');
			return f(m, "service") + ":" + f(m, "member_state") + (rb.hidden ? "" : ":" + rb.textContent); }).join(",")].join(" | "); })()`

// The Releases section follows the stream's release events without a
// reload: a new release goes on top, a change of one updates its row in
// place, and data shows as text, never as markup.
func TestStatusPageReleasesLive(t *testing.T) {
	chromium := needChromium(t)
	env := startBrowserServer(t, digestOf("5e8d27"), "ok", false)
	ctx := newBrowser(t, chromium)
	eval := func(expr string) string { t.Helper(); return ctx.eval(t, expr) }
	waitUntil := func(what, expr, want string) { t.Helper(); ctx.waitUntil(t, what, expr, want) }
	order := `[...document.querySelectorAll('[data-list="releases"] > li')].map(li => li.dataset.release).join(",")`

	if err := chromedp.Do(ctx, chromedp.Navigate(env.ts.URL+"/")); err != nil {
		t.Fatal(err)
	}
	const seeded = "v7 | 9f2c4e1 | rolled back | web | web's deployment ended rolled_back: health check failed; backend rolled back to 3f9a1c3f9a1c | backend:not started,web:not started"
	if got := eval(fmt.Sprintf(releaseRowJS, 1)); got != seeded {
		t.Fatalf("seeded release shows %q, want %q", got, seeded)
	}
	waitUntil("live indicator", `document.getElementById("live").dataset.state`, "live")
	eval(`window.__loadMarker = "first load"; ""`)

	// A new release of the set, running its first member, goes on top.
	const commit = "4be1f0c7d2a9e8b3c6f5a4d1e0b9c8a7f6e5d4c3"
	created := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	rel := deployer.Release{ID: 2, Set: "v7", Commit: commit, State: deployer.ReleaseRunning, CreatedAt: created,
		Members: []deployer.ReleaseMember{
			{Service: "backend", Tag: "sha-4be1f0c", Digest: digestOf("b2"), DeploymentID: 7, State: deployer.StateRunning},
			{Service: "web", Tag: "sha-4be1f0c"},
		}}
	env.hub.PublishRelease(rel)
	waitUntil("new release on top", order, "2,1")
	if got, want := eval(fmt.Sprintf(releaseRowJS, 2)), "v7 | 4be1f0c | running | - | - | backend:running,web:not started"; got != want {
		t.Errorf("new release shows %q, want %q", got, want)
	}
	if got := eval(`(() => { const r = document.querySelector('[data-release="2"]'); const t = r.querySelector('[data-field="created"]');
		return r.querySelector('[data-field="id"]').textContent + " " + r.querySelector('[data-field="commit"]').title + " " + t.getAttribute("datetime") + " " + t.textContent; })()`); got != "#2 "+commit+" 2026-03-04T05:06:07Z 2026-03-04 05:06:07 UTC" {
		t.Errorf("new release's id, commit and time: %q", got)
	}
	if got := eval(`document.querySelector('[data-release="2"] [data-field="member_state"]').className`); got != "badge state-running" {
		t.Errorf("running member's badge class %q", got)
	}

	// Its web member fails; backend is rolled back: the same row changes.
	rel.State, rel.FailedMember, rel.Reason = deployer.ReleaseRolledBack, "web", "web: health check failed; backend rolled back to "+deployer.ShortDigest(digestOf("a1"))
	rel.Members[0].State, rel.Members[0].RollbackID, rel.Members[0].RollbackState = deployer.StateSucceeded, 9, deployer.StateSucceeded
	rel.Members[1].Digest, rel.Members[1].DeploymentID, rel.Members[1].State = digestOf("c3"), 8, deployer.StateRolledBack
	env.hub.PublishRelease(rel)
	want := "v7 | 4be1f0c | rolled back | web | " + rel.Reason + " | backend:succeeded:rolled back: succeeded,web:rolled back"
	waitUntil("release updated in place", fmt.Sprintf(releaseRowJS, 2), want)
	if got := eval(order); got != "2,1" {
		t.Errorf("releases after the update: %q, want 2,1", got)
	}
	if got := eval(`document.querySelector('[data-release="2"] [data-field="rollback"]').title`); got != "deployment #9" {
		t.Errorf("rollback badge title %q", got)
	}
	if got := eval(fmt.Sprintf(releaseRowJS, 1)); got != seeded {
		t.Errorf("the other release changed: %q", got)
	}

	// Names and reasons that look like markup stay text.
	env.hub.PublishRelease(deployer.Release{ID: 3, Set: hostileText, Commit: commit, State: deployer.ReleaseFailed,
		FailedMember: hostileText, Reason: hostileText, CreatedAt: created,
		Members: []deployer.ReleaseMember{{Service: hostileText, Tag: hostileText, State: deployer.StateFailed}}})
	waitUntil("hostile release", order, "3,2,1")
	want = fmt.Sprintf("%s | 4be1f0c | failed | %s | %s | %s:failed", hostileText, hostileText, hostileText, hostileText)
	if got := eval(fmt.Sprintf(releaseRowJS, 3)); got != want {
		t.Errorf("hostile release shows %q, want it literally", got)
	}
	if got := eval(`document.querySelector('[data-release="3"] [data-member]').dataset.member`); got != hostileText {
		t.Errorf("hostile member's data-member = %q", got)
	}
	if got := eval(`String(document.querySelectorAll("main img, main script").length) + " " + String(window.__injected || 0)`); got != "0 0" {
		t.Errorf("injected elements/effects: %s", got)
	}
	if got := eval(`window.__loadMarker || "reloaded"`); got != "first load" {
		t.Fatalf("the page was reloaded (marker %q)", got)
	}
	if p := ctx.problemList(); len(p) > 0 {
		t.Errorf("console problems:\n%s", strings.Join(p, "\n"))
	}
}
