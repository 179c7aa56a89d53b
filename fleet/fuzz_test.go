package fleet_test

import (
	"encoding/json"
	"testing"

	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/fleet"
)

// DecodeIntent either refuses a message or returns an intent that
// validates and names subject-safe host and service tokens.
func FuzzDecodeIntent(f *testing.F) {
	good, err := json.Marshal(intent("web-1", "backend", 3))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"seq":1,"host":"web.1","service":"b","image":"i","digest":"sha256:x"}`))
	f.Add([]byte(`{"seq":-1}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := fleet.DecodeIntent(data)
		if err != nil {
			return
		}
		if in.Seq <= 0 || fleet.ValidName(in.Host) != nil || fleet.ValidName(in.Service) != nil ||
			!deployer.ValidDigest(in.Digest) || in.Image == "" {
			t.Fatalf("accepted an invalid intent: %+v", in)
		}
	})
}

// DecodeReport either refuses a message or returns a report of a known
// kind with subject-safe names, a step for a step and a final state for a
// result.
func FuzzDecodeReport(f *testing.F) {
	f.Add([]byte(`{"kind":"step","host":"web-1","service":"backend","seq":3,"step":{"name":"pull","outcome":"ok"}}`))
	f.Add([]byte(`{"kind":"result","host":"web-1","service":"backend","seq":3,"state":"succeeded"}`))
	f.Add([]byte(`{"kind":"result","host":"web-1","service":"backend","seq":3,"state":"running"}`))
	f.Add([]byte(`{"kind":"step","host":"web-1","service":"backend"}`))
	f.Add([]byte(`{"kind":"other","host":"*","service":">"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := fleet.DecodeReport(data)
		if err != nil {
			return
		}
		if fleet.ValidName(r.Host) != nil || fleet.ValidName(r.Service) != nil {
			t.Fatalf("accepted bad names: %+v", r)
		}
		switch r.Kind {
		case fleet.ReportStep:
			if r.Step == nil {
				t.Fatal("accepted a step report without a step")
			}
		case fleet.ReportResult:
			if r.State == "" || !r.State.Final() {
				t.Fatalf("accepted a result in state %q", r.State)
			}
		default:
			t.Fatalf("accepted kind %q", r.Kind)
		}
	})
}
