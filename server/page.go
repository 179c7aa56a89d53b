package server

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/deployd/deployd/auth/github"
	"github.com/deployd/deployd/auth/registry"
	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/server/httperr"
)

// The status page's templates and static assets, compiled into the binary.
var (
	//go:embed templates/*.html
	templateFiles embed.FS
	//go:embed assets
	assetFiles embed.FS
)

// Status page limits.
const (
	pageDeployments = 10 // recent deployments per service
	pageDeliveries  = 15 // recent webhook deliveries
)

// contentSecurityPolicy allows the page its own script, styles and the
// event stream, and nothing else: no inline code, no other origin, no framing.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Credentials is where the status page reads how the registry credentials
// fare, in the types of the packages that own them: each source's health
// from the credential chain (registry.Chain.Health) and the cached
// installation tokens and failed mints from the GitHub App
// (github.App.Stats). Either may be nil (no chain, no App configured);
// with both nil the page says that credential health is not reported.
// They must be safe for concurrent use and never report a secret.
type Credentials struct {
	Sources func() []registry.SourceHealth
	Tokens  func() github.AppStats
}

// page renders the status page and serves its assets.
type page struct {
	tmpl   *template.Template
	assets map[string]asset // by file name
	css    string           // versioned URLs of the assets
	js     string
	icon   string
}

// asset is one embedded static file.
type asset struct {
	body        []byte
	contentType string
	etag        string
}

// newPage parses the templates and loads the assets.
func newPage() (*page, error) {
	p := &page{assets: make(map[string]asset)}
	err := fs.WalkDir(assetFiles, "assets", func(name string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		body, err := assetFiles.ReadFile(name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		ct := mime.TypeByExtension(path.Ext(name))
		if ct == "" {
			ct = "application/octet-stream"
		}
		p.assets[path.Base(name)] = asset{body: body, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load status page assets: %w", err)
	}
	p.css, p.js, p.icon = p.assetURL("status.css"), p.assetURL("status.js"), p.assetURL("favicon.svg")
	if p.css == "" || p.js == "" || p.icon == "" {
		return nil, fmt.Errorf("load status page assets: status.css, status.js or favicon.svg missing")
	}
	p.tmpl, err = template.New("page.html").Funcs(pageFuncs()).ParseFS(templateFiles, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("parse status page templates: %w", err)
	}
	if p.tmpl.Lookup("page.html") == nil {
		return nil, fmt.Errorf("parse status page templates: page.html missing")
	}
	return p, nil
}

// assetURL is the cache-busting URL of an asset, "" if there is none.
func (p *page) assetURL(name string) string {
	a, ok := p.assets[name]
	if !ok {
		return ""
	}
	return "/assets/" + name + "?v=" + strings.Trim(a.etag, `"`)
}

// pageData is what page.html renders.
type pageData struct {
	Services    []serviceCard
	Credentials credentialsView
	Deliveries  []deployer.Delivery
	// Releases are the recent releases of the release sets; ReleaseSets
	// says whether any is configured.
	Releases    []deployer.Release
	ReleaseSets bool
	Now         time.Time
	CSS, JS     string
	Icon        string
	// Private shows the log out button (status.public: false).
	Private bool
	// BlankDeployment, BlankStep, BlankDelivery, BlankRelease and
	// BlankReleaseMember render the empty rows that the script clones for
	// new data.
	BlankDeployment    deploymentRow
	BlankStep          deployer.Step
	BlankDelivery      deployer.Delivery
	BlankRelease       deployer.Release
	BlankReleaseMember deployer.ReleaseMember
}

// serviceCard is one service with its recent deployments.
type serviceCard struct {
	serviceView
	Recent []deploymentRow
}

// BadgeState is the service's badge: its last deployment's state, or
// "none" before the first.
func (c serviceCard) BadgeState() string {
	if c.LastDeployment == nil {
		return "none"
	}
	return string(c.LastDeployment.State)
}

// LastOrBlank is the service's last deployment, or a zero one before the first.
func (c serviceCard) LastOrBlank() deployer.Deployment {
	if c.LastDeployment == nil {
		return deployer.Deployment{}
	}
	return *c.LastDeployment
}

// deploymentRow is a deployment in the recent list.
type deploymentRow struct {
	deployer.Deployment
	// Open expands the step log: the newest deployment when it failed.
	Open bool
}

// credentialsView is the credential section.
type credentialsView struct {
	Reported     bool
	Sources      []credentialRow
	Tokens       []github.TokenInfo
	MintFailures int64
}

// credentialRow is a source and whether it is the one in use for its host.
type credentialRow struct {
	registry.SourceHealth
	InUse bool
}

// statusPage serves GET /.
func (s *Server) statusPage(w http.ResponseWriter, r *http.Request) {
	data := pageData{Now: time.Now().UTC(), CSS: s.page.css, JS: s.page.js, Icon: s.page.icon, Private: s.statusPrivate}
	for _, svc := range s.services {
		v, err := s.serviceView(r, svc)
		if err != nil {
			httperr.Write(w, r, err)
			return
		}
		ds, err := s.store.Deployments(r.Context(), svc.Name, deployer.Page{Limit: pageDeployments})
		if err != nil {
			httperr.Write(w, r, err)
			return
		}
		card := serviceCard{serviceView: v, Recent: make([]deploymentRow, len(ds))}
		for i, d := range ds {
			// Listings leave the step logs out; the page shows them.
			if d, err = s.store.Deployment(r.Context(), d.ID); err != nil {
				httperr.Write(w, r, err)
				return
			}
			card.Recent[i] = deploymentRow{Deployment: d, Open: i == 0 && d.Error != ""}
		}
		data.Services = append(data.Services, card)
	}
	deliveries, err := s.store.Deliveries(r.Context(), deployer.Page{Limit: pageDeliveries})
	if err != nil {
		httperr.Write(w, r, err)
		return
	}
	data.Deliveries = deliveries
	if data.Releases, err = s.recentReleases(r); err != nil {
		httperr.Write(w, r, err)
		return
	}
	data.ReleaseSets = s.releases != nil
	if c := s.credentials; c.Sources != nil || c.Tokens != nil {
		var sources []registry.SourceHealth
		var app github.AppStats
		if c.Sources != nil {
			sources = c.Sources()
		}
		if c.Tokens != nil {
			app = c.Tokens()
		}
		data.Credentials = credentialsFrom(sources, app)
	}
	var buf bytes.Buffer
	if err := s.page.tmpl.ExecuteTemplate(&buf, "page.html", data); err != nil {
		httperr.Write(w, r, fmt.Errorf("render status page: %w", err))
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = buf.WriteTo(w) // the client went away; nothing to do
}

// credentialsFrom marks, per host, the source the registry accepted most
// recently as the one in use.
func credentialsFrom(sources []registry.SourceHealth, app github.AppStats) credentialsView {
	v := credentialsView{Reported: true, Tokens: app.Tokens, MintFailures: app.MintFailures}
	inUse := make(map[string]int) // host → index into v.Sources
	for _, src := range sources {
		v.Sources = append(v.Sources, credentialRow{SourceHealth: src})
		if src.State != registry.HealthOK {
			continue
		}
		i, ok := inUse[src.Host]
		if !ok || src.Updated.After(v.Sources[i].Updated) {
			inUse[src.Host] = len(v.Sources) - 1
		}
	}
	for _, i := range inUse {
		v.Sources[i].InUse = true
	}
	return v
}

// serveAsset serves GET /assets/{name}. The URLs the page uses carry the
// content hash, so the files may be cached for long.
func (s *Server) serveAsset(w http.ResponseWriter, r *http.Request) {
	a, ok := s.page.assets[chi.URLParam(r, "name")]
	if !ok {
		s.notFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("Cache-Control", "public, max-age=86400")
	h.Set("ETag", a.etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}

// pageHeaders sets the security headers of the status page, the login form
// and their assets. The referrer policy is same-origin rather than
// no-referrer because with no-referrer a browser sends "Origin: null" on
// the pages' own form posts, which the login's origin check must refuse;
// the pages link nowhere else.
func pageHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("X-Content-Type-Options", "nosniff")
		next.ServeHTTP(w, r)
	})
}

// pageFuncs returns the status page's template functions. The script in
// assets/status.js formats the same way; keep the two in step.
func pageFuncs() template.FuncMap {
	return template.FuncMap{
		"short":     deployer.ShortDigest,
		"when":      formatTime,
		"iso":       isoTime,
		"dur":       formatDuration,
		"took":      tookText,
		"at":        deployedAt,
		"trigger":   triggerText,
		"stateText": func(s deployer.State) string { return stateText(string(s)) },
		"words":     stateText,
		"ref":       refText,
		"until":     untilText,
		"join":      strings.Join,
		"commit":    shortCommit,
	}
}

// formatTime is how the page shows a moment: UTC to the second.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05") + " UTC"
}

func isoTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// formatDuration rounds d for people: 340ms, 4.2s, 2m05s, 1h02m.
func formatDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
}

// deployedAt is when a deployment ended, else started, else was queued.
func deployedAt(d deployer.Deployment) time.Time {
	switch {
	case d.FinishedAt != nil:
		return *d.FinishedAt
	case d.StartedAt != nil:
		return *d.StartedAt
	}
	return d.QueuedAt
}

// tookText is how long a deployment ran, "" before it started.
func tookText(d deployer.Deployment) string {
	switch {
	case d.StartedAt == nil:
		return ""
	case d.FinishedAt == nil:
		return "running"
	}
	return formatDuration(d.FinishedAt.Sub(*d.StartedAt))
}

// triggerText says what asked for a deployment.
func triggerText(t deployer.Trigger) string {
	switch t.Kind {
	case deployer.TriggerWebhook:
		s := "webhook"
		if t.Event != "" {
			s += " " + t.Event
		}
		if id := t.DeliveryID; len(id) > 12 {
			s += " " + id[:8] + "…" // the full id is in the title and the deliveries list
		} else if id != "" {
			s += " " + id
		}
		return s
	case deployer.TriggerManual, deployer.TriggerRollback:
		if t.Subject != "" {
			return string(t.Kind) + " by " + t.Subject
		}
	}
	return string(t.Kind)
}

// stateText turns rolled_back into "rolled back".
func stateText(s string) string { return strings.ReplaceAll(s, "_", " ") }

// refText is a deployment's tag and short digest, "tag @ 0123456789ab".
func refText(tag, digest string) string {
	switch {
	case tag != "" && digest != "":
		return tag + " @ " + deployer.ShortDigest(digest)
	case digest != "":
		return "@ " + deployer.ShortDigest(digest)
	case tag != "":
		return tag
	}
	return "—"
}

// untilText says how far t is from now: "in 52m", "3m ago".
func untilText(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	if d := t.Sub(now); d >= 0 {
		return "in " + formatDuration(d.Truncate(time.Second))
	}
	return formatDuration(now.Sub(t).Truncate(time.Second)) + " ago"
}
