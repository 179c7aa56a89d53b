package sqlite

import (
	"context"
	"database/sql"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/deployd/deployd/deployer"
)

// upgrade closes old and opens its database again with every migration.
func upgrade(t *testing.T, old *Store, path string) *Store {
	t.Helper()
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// migrationsUpTo returns the embedded migrations numbered up to version.
func migrationsUpTo(t *testing.T, version int) fstest.MapFS {
	t.Helper()
	ms, err := readMigrations(embeddedMigrations())
	if err != nil {
		t.Fatal(err)
	}
	fsys := fstest.MapFS{}
	for _, m := range ms {
		if m.version <= version {
			fsys[m.name] = &fstest.MapFile{Data: []byte(m.sql)}
		}
	}
	return fsys
}

func TestForeignKeysOffMarkerIsTheFirstLine(t *testing.T) {
	ms, err := readMigrations(fstest.MapFS{
		"0001_on.sql":     {Data: []byte("-- a comment\nSELECT 1;")},
		"0002_off.sql":    {Data: []byte(foreignKeysOffMarker + "\nSELECT 1;")},
		"0003_crlf.sql":   {Data: []byte(foreignKeysOffMarker + "\r\nSELECT 1;")},
		"0004_later.sql":  {Data: []byte("SELECT 1;\n" + foreignKeysOffMarker + "\n")},
		"0005_prefix.sql": {Data: []byte(foreignKeysOffMarker + " please\nSELECT 1;")},
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []bool
	for _, m := range ms {
		got = append(got, m.foreignKeysOff)
	}
	if want := []bool{false, true, true, false, false}; !slices.Equal(got, want) {
		t.Errorf("foreignKeysOff = %v, want %v", got, want)
	}
}

// A table that others reference can be rebuilt by a migration marked
// foreign_keys off, and only when the references still hold afterwards.
func TestForeignKeysOffMigration(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "deployd.db")
	fsys := withRealMigrations(t, fstest.MapFS{
		"9001_tables.sql": {Data: []byte(`
			CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT UNIQUE) STRICT;
			CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL REFERENCES parent (id)) STRICT;
			INSERT INTO parent (id, name) VALUES (1, 'a'), (5, 'b');
			INSERT INTO child (parent_id) VALUES (1), (5), (5);`)},
	})
	rebuild := `CREATE TABLE parent_new (id INTEGER PRIMARY KEY, name TEXT) STRICT;
		INSERT INTO parent_new (id, name) SELECT id, name FROM parent;
		DROP TABLE parent;
		ALTER TABLE parent_new RENAME TO parent;`

	// Without the marker, dropping a referenced table fails.
	fsys["9002_rebuild.sql"] = &fstest.MapFile{Data: []byte(rebuild)}
	if s, err := Open(ctx, path, withMigrations(fsys)); err == nil {
		s.Close()
		t.Fatal("dropping a referenced table with foreign keys on was accepted")
	}

	// With it, but leaving a child without its parent: refused, undone.
	fsys["9002_rebuild.sql"] = &fstest.MapFile{Data: []byte(foreignKeysOffMarker + "\n" + rebuild + "\nDELETE FROM parent WHERE id = 5;")}
	_, err := Open(ctx, path, withMigrations(fsys))
	if err == nil || !strings.Contains(err.Error(), "foreign key check: 2 violations") {
		t.Fatalf("dangling references: err = %v, want 2 foreign key violations", err)
	}

	fsys["9002_rebuild.sql"] = &fstest.MapFile{Data: []byte(foreignKeysOffMarker + "\n" + rebuild)}
	s, err := Open(ctx, path, withMigrations(fsys))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var parents, children, fk int
	var schema string
	if err := s.wdb.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM parent), (SELECT count(*) FROM child),
		(SELECT sql FROM sqlite_schema WHERE name = 'child')`).Scan(&parents, &children, &schema); err != nil {
		t.Fatal(err)
	}
	if parents != 2 || children != 3 || !strings.Contains(schema, "REFERENCES parent (id)") {
		t.Errorf("after the rebuild: %d parents, %d children, child is %s", parents, children, schema)
	}
	if err := s.wdb.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&fk); err != nil || fk != 1 {
		t.Errorf("foreign_keys = %d, %v after the migration, want 1", fk, err)
	}
	if _, err := s.wdb.ExecContext(ctx, "INSERT INTO child (parent_id) VALUES (99)"); err == nil {
		t.Error("foreign keys are not enforced after the migration")
	}
	// The unique constraint went with the old table.
	if _, err := s.wdb.ExecContext(ctx, "INSERT INTO parent (id, name) VALUES (6, 'a')"); err != nil {
		t.Errorf("rebuilt table kept the old constraint: %v", err)
	}
}

// A database written before duplicates were recorded keeps every delivery,
// deployment and reference through migration 0003.
func TestMigrationRecordsDuplicatesKeepsData(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "deployd.db")
	old, err := Open(ctx, path, withMigrations(migrationsUpTo(t, 2)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.RecordDelivery(ctx, delivery("d1"), []deployer.Request{request("backend", "v1"), request("web", "v1")}); err != nil {
		t.Fatal(err)
	}
	if _, err := old.RecordDelivery(ctx, delivery("d2"), nil); err != nil {
		t.Fatal(err)
	}
	noID := delivery("no id")
	noID.ID, noID.BodySHA256 = "", ""
	if _, err := old.RecordDelivery(ctx, noID, nil); err != nil {
		t.Fatal(err)
	}
	third, err := old.RecordDelivery(ctx, delivery("d3"), []deployer.Request{request("backend", "v2")})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := old.ClaimNext(ctx, "backend"); err != nil {
		t.Fatal(err)
	}
	if err := old.AppendStep(ctx, third.Deployments[0], deployer.Step{Name: "pull", Outcome: "ok"}); err != nil {
		t.Fatal(err)
	}
	before := deliveriesBefore0006(t, old)
	if len(before) != 4 {
		t.Fatalf("before 0003: %d deliveries, want 4", len(before))
	}
	deploymentsBefore := must(old.Deployments(ctx, "", deployer.Page{}))(t)

	s := upgrade(t, old, path)
	after, err := s.Deliveries(ctx, deployer.Page{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(after, before, sameDelivery) {
		t.Errorf("deliveries after 0003:\n%+v\nwant\n%+v", after, before)
	}
	deploymentsAfter, err := s.Deployments(ctx, "", deployer.Page{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(idsOf(deploymentsAfter), idsOf(deploymentsBefore)) {
		t.Errorf("deployments after 0003 = %v, want %v", idsOf(deploymentsAfter), idsOf(deploymentsBefore))
	}
	if got, err := s.Deployment(ctx, third.Deployments[0]); err != nil || len(got.Steps) != 1 || got.State != deployer.StateRunning {
		t.Errorf("deployment %d after 0003: %+v, %v", third.Deployments[0], got, err)
	}

	var (
		fk                 int
		leftovers, indexes int
		deploymentsSchema  string
	)
	if err := s.wdb.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&fk); err != nil || fk != 1 {
		t.Errorf("foreign_keys = %d, %v after 0003, want 1", fk, err)
	}
	if err := s.wdb.QueryRowContext(ctx, `SELECT
		(SELECT count(*) FROM sqlite_schema WHERE name LIKE 'deliveries_new%' OR name LIKE 'sqlite_autoindex_deliveries%'),
		(SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND name IN ('deliveries_delivery_id', 'deliveries_body_sha256')),
		(SELECT sql FROM sqlite_schema WHERE name = 'deployments')`).Scan(&leftovers, &indexes, &deploymentsSchema); err != nil {
		t.Fatal(err)
	}
	if leftovers != 0 || indexes != 2 || !strings.Contains(deploymentsSchema, "REFERENCES deliveries (seq)") {
		t.Errorf("schema after 0003: %d leftovers, %d partial indexes, deployments: %s", leftovers, indexes, deploymentsSchema)
	}
	assertNoForeignKeyViolations(t, s.wdb)
	if _, err := s.wdb.ExecContext(ctx, `INSERT INTO deployments (service, delivery_seq, trigger_kind, state, queued_at)
		VALUES ('backend', 9999, 'webhook', 'queued', '')`); err == nil {
		t.Error("a deployment of an unknown delivery was accepted after 0003")
	}

	// The old deliveries are the originals that duplicates are checked against.
	rc, err := s.RecordDelivery(ctx, delivery("d1"), []deployer.Request{request("backend", "v3")})
	if err != nil || !rc.Duplicate {
		t.Fatalf("d1 after 0003: %+v, %v; want a duplicate", rc, err)
	}
	ds, err := s.Deliveries(ctx, deployer.Page{Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if ds[0].Result != deployer.ResultDuplicate || ds[0].Seq <= before[0].Seq || ds[0].ID != "d1" {
		t.Errorf("newest delivery = %+v, want d1 as a duplicate with a new seq", ds[0])
	}
	if d, err := s.Deliveries(ctx, deployer.Page{Before: ds[0].Seq}); err != nil || !slices.EqualFunc(d, before, sameDelivery) {
		t.Errorf("older deliveries = %+v, %v", d, err)
	}
}

// deliveriesBefore0006 lists the deliveries of a store migrated to a version
// before 0006, which Deliveries cannot read (it reads the redeliveries of
// 0006 too), newest first, with the fields sameDelivery compares.
func deliveriesBefore0006(t *testing.T, s *Store) []deployer.Delivery {
	t.Helper()
	rows, err := s.rdb.Query(`SELECT d.seq, COALESCE(d.delivery_id, ''), d.event, d.action, COALESCE(d.body_sha256, ''),
			d.received_at, d.result, d.reason,
			(SELECT group_concat(id) FROM deployments WHERE delivery_seq = d.seq)
		FROM deliveries d ORDER BY d.seq DESC`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []deployer.Delivery
	for rows.Next() {
		var (
			d        deployer.Delivery
			received string
			ids      sql.NullString
		)
		if err := rows.Scan(&d.Seq, &d.ID, &d.Event, &d.Action, &d.BodySHA256, &received, &d.Result, &d.Reason, &ids); err != nil {
			t.Fatal(err)
		}
		d.ReceivedAt = must(parseTime(received))(t)
		d.DeploymentIDs = must(parseIDs(ids.String))(t)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func sameDelivery(a, b deployer.Delivery) bool {
	return a.Seq == b.Seq && a.ID == b.ID && a.Event == b.Event && a.Action == b.Action &&
		a.BodySHA256 == b.BodySHA256 && a.ReceivedAt.Equal(b.ReceivedAt) && a.Result == b.Result &&
		a.Reason == b.Reason && slices.Equal(a.DeploymentIDs, b.DeploymentIDs)
}

func assertNoForeignKeyViolations(t *testing.T, db *sql.DB) {
	t.Helper()
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if err := foreignKeyCheck(context.Background(), tx); err != nil {
		t.Error(err)
	}
}

// Both arms of the duplicate check use the partial indexes.
func TestDuplicateCheckUsesIndexes(t *testing.T) {
	ctx := context.Background()
	s, _ := openTestStore(t)
	rows, err := s.rdb.QueryContext(ctx, "EXPLAIN QUERY PLAN "+duplicateQuery, "d1", "abc")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	text := strings.Join(plan, "\n")
	if strings.Contains(text, "SCAN") || !strings.Contains(text, "deliveries_delivery_id") || !strings.Contains(text, "deliveries_body_sha256") {
		t.Errorf("plan:\n%s\nwant both partial indexes, no scan", text)
	}
}

// Migration 0005 rebuilds deployments: every row, step and reference is
// kept, the CHECK still refuses an unknown state, and no id is ever given
// twice, even one whose row is gone.
func TestMigrationDeploymentsStateCheckKeepsData(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "deployd.db")
	old, err := Open(ctx, path, withMigrations(migrationsUpTo(t, 4)))
	if err != nil {
		t.Fatal(err)
	}
	// Rows in every shape: finished with an error, superseded, queued with
	// every option, running with steps.
	first, err := old.RecordDelivery(ctx, delivery("d1"), []deployer.Request{request("backend", "v1"), request("web", "v1")})
	if err != nil {
		t.Fatal(err)
	}
	failed, _ := must2(old.ClaimNext(ctx, "backend"))(t)
	if err := old.AppendStep(ctx, failed.ID, deployer.Step{Name: "pull", Outcome: "failed", Message: "denied"}); err != nil {
		t.Fatal(err)
	}
	failed.State, failed.Digest = deployer.StateFailed, "sha256:"+strings.Repeat("ab", 32)
	failed.ErrorClass, failed.Error, failed.Hint = "auth", "pull: denied", "check the App's packages permission"
	if err := old.Finish(ctx, failed); err != nil {
		t.Fatal(err)
	}
	queued := manual("web", "v2")
	queued.Digest, queued.Force, queued.DryRun = "sha256:"+strings.Repeat("cd", 32), true, true
	if _, err := old.Enqueue(ctx, queued); err != nil {
		t.Fatal(err)
	}
	if _, err := old.Enqueue(ctx, manual("backend", "v3")); err != nil {
		t.Fatal(err)
	}
	running, _ := must2(old.ClaimNext(ctx, "backend"))(t)
	if err := old.AppendStep(ctx, running.ID, deployer.Step{Name: "resolve", Outcome: "ok"}); err != nil {
		t.Fatal(err)
	}
	// The newest id was given once and its row is gone.
	gone, err := old.Enqueue(ctx, manual("backend", "v9"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.wdb.ExecContext(ctx, "DELETE FROM deployments WHERE id = ?", gone.ID); err != nil {
		t.Fatal(err)
	}
	before := must(old.Deployments(ctx, "", deployer.Page{}))(t)
	var beforeOne []deployer.Deployment
	for _, d := range before {
		beforeOne = append(beforeOne, deploymentBefore0009(t, old, d.ID))
	}

	s := upgrade(t, old, path)
	after := must(s.Deployments(ctx, "", deployer.Page{}))(t)
	if len(after) != 4 || !reflect.DeepEqual(after, before) {
		t.Errorf("deployments after 0005:\n%+v\nwant\n%+v", after, before)
	}
	for _, want := range beforeOne {
		if got := must(s.Deployment(ctx, want.ID))(t); !reflect.DeepEqual(got, want) {
			t.Errorf("deployment %d after 0005:\n%+v\nwant\n%+v", want.ID, got, want)
		}
	}
	if len(beforeOne) != 4 || len(beforeOne[0].Steps)+len(beforeOne[3].Steps) != 2 ||
		beforeOne[3].State != deployer.StateFailed || beforeOne[0].State != deployer.StateRunning {
		t.Fatalf("test setup: %+v", beforeOne)
	}
	ds, err := s.Deliveries(ctx, deployer.Page{})
	if err != nil || len(ds) != 1 || !slices.Equal(ds[0].DeploymentIDs, first.Deployments) {
		t.Errorf("deliveries after 0005: %+v, %v; want d1 with %v", ds, err, first.Deployments)
	}
	assertNoForeignKeyViolations(t, s.wdb)

	var leftovers, indexes int
	if err := s.wdb.QueryRowContext(ctx, `SELECT
		(SELECT count(*) FROM sqlite_schema WHERE name LIKE 'deployments_new%'),
		(SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'deployments'
			AND name IN ('deployments_by_service', 'deployments_queued', 'deployments_running', 'deployments_by_delivery'))`).Scan(&leftovers, &indexes); err != nil {
		t.Fatal(err)
	}
	if leftovers != 0 || indexes != 4 {
		t.Errorf("schema after 0005: %d leftovers, %d indexes on deployments, want 0 and 4", leftovers, indexes)
	}
	if _, err := s.wdb.ExecContext(ctx, `INSERT INTO deployments (service, trigger_kind, state, queued_at)
		VALUES ('backend', 'manual', 'waiting', '')`); err == nil {
		t.Error("a deployment in an unknown state was accepted after 0005")
	}
	if _, err := s.wdb.ExecContext(ctx, `INSERT INTO deployments (service, delivery_seq, trigger_kind, state, queued_at)
		VALUES ('backend', 9999, 'webhook', 'queued', '')`); err == nil {
		t.Error("a deployment of an unknown delivery was accepted after 0005")
	}
	next, err := s.Enqueue(ctx, manual("backend", "v10"))
	if err != nil {
		t.Fatal(err)
	}
	if next.ID <= gone.ID {
		t.Errorf("id after 0005 = %d, want above %d, which was given before", next.ID, gone.ID)
	}
}

// Writing a deployment builds no temporary b-tree: SQLite compiles
// "x IN (more than two values)", in a CHECK too, into one, and building it
// for every row was a good part of the cost of a webhook delivery.
func TestDeploymentWritesUseNoTemporaryTable(t *testing.T) {
	ctx := context.Background()
	s, _ := openTestStore(t)
	for _, stmt := range []struct {
		name  string
		query string
		args  int
	}{
		{"insert", insertDeploymentQuery, 14},
		{"supersede", supersedeQuery, 2},
		{"finish", finishQuery, 9},
	} {
		args := make([]any, stmt.args)
		for i := range args {
			args[i] = "x"
		}
		rows, err := s.rdb.QueryContext(ctx, "EXPLAIN "+stmt.query, args...)
		if err != nil {
			t.Fatalf("%s: %v", stmt.name, err)
		}
		var ops []string
		for rows.Next() {
			var (
				addr, p1, p2, p3 int
				op               string
				p4, p5, comment  any
			)
			if err := rows.Scan(&addr, &op, &p1, &p2, &p3, &p4, &p5, &comment); err != nil {
				t.Fatal(err)
			}
			ops = append(ops, op)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		rows.Close()
		if len(ops) == 0 || slices.Contains(ops, "OpenEphemeral") {
			t.Errorf("%s compiles to %d operations with OpenEphemeral: %v", stmt.name, len(ops), ops)
		}
	}
}
