package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/registry/storetest"
	"github.com/zerotouch/zerotouch/internal/seal"
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

func openTest(t testing.TB, path string) *Store {
	t.Helper()
	s, err := Open(context.Background(), path, Options{Logger: testLogger(t), Sealer: testSealer(t)})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

// testSealer seals under a fixed key, so that a test can reopen a store.
func testSealer(t testing.TB) *seal.Sealer {
	t.Helper()
	s, err := seal.New(bytes.Repeat([]byte{0x5e}, seal.KeyLen))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newTestStore(t testing.TB) *Store {
	t.Helper()
	s := openTest(t, filepath.Join(t.TempDir(), "zerotouch.db"))
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) registry.Store { return newTestStore(t) })
}

func testProfile(t testing.TB, s registry.Store, name string) *registry.Profile {
	t.Helper()
	p := &registry.Profile{OrgID: registry.DefaultOrgID, Name: name, Strategy: registry.StrategyAllowCreate,
		ProvisionKey: "key-" + name, ProvisionSecretHash: "sha256$x$y",
		DefaultCredentialType: registry.CredentialAccessToken, ReprovisionPolicy: registry.ReprovisionNever}
	if err := s.CreateProfile(context.Background(), p); err != nil {
		t.Fatalf("CreateProfile: %v", err)
	}
	return p
}

func provisionCommit(profileID, name string) *registry.ProvisionCommit {
	return &registry.ProvisionCommit{
		Device: &registry.Device{OrgID: registry.DefaultOrgID, ProfileID: profileID, Name: name,
			Status: registry.DeviceEnabled, Attributes: map[string]any{"n": name}},
		Create:      true,
		Credentials: []registry.Credential{{Type: registry.CredentialAccessToken, LookupKey: "tok-" + name}},
		Audit:       registry.AuditEvent{OrgID: registry.DefaultOrgID, Actor: "device", Action: "provision", Result: "success", Dialect: "thingsboard"},
	}
}

func TestPragmas(t *testing.T) {
	s := newTestStore(t)
	ctx := t.Context()
	for _, tc := range []struct {
		db     *sql.DB
		pragma string
		want   string
	}{
		{s.wdb, "journal_mode", "wal"},
		{s.wdb, "synchronous", "2"}, // FULL
		{s.wdb, "foreign_keys", "1"},
		{s.wdb, "busy_timeout", fmt.Sprint(busyTimeoutMS)},
		{s.rdb.DB, "journal_mode", "wal"},
		{s.rdb.DB, "query_only", "1"},
	} {
		var got string
		if err := tc.db.QueryRowContext(ctx, "PRAGMA "+tc.pragma).Scan(&got); err != nil {
			t.Fatalf("PRAGMA %s: %v", tc.pragma, err)
		}
		if got != tc.want {
			t.Errorf("PRAGMA %s = %q, want %q", tc.pragma, got, tc.want)
		}
	}
}

func TestMigrationsAreNumbered(t *testing.T) {
	migs, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(migs) == 0 || migs[0].name != "0001_init.sql" {
		t.Fatalf("migrations = %v, want 0001_init.sql first", migs)
	}
}

func TestReopenSeesEverything(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "zerotouch.db")
	s := openTest(t, path)
	p := testProfile(t, s, "p")
	var wg sync.WaitGroup
	commits := make([]*registry.ProvisionCommit, 100)
	for i := range commits {
		commits[i] = provisionCommit(p.ID, fmt.Sprintf("dev-%03d", i))
		wg.Go(func() {
			if err := s.CommitProvision(ctx, commits[i]); err != nil {
				t.Errorf("CommitProvision: %v", err)
			}
		})
	}
	wg.Wait()
	key := &registry.APIKey{OrgID: registry.DefaultOrgID, Name: "admin", Role: registry.RoleAdmin, Hash: "h"}
	if err := s.CreateAPIKey(ctx, key); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := s.CommitProvision(ctx, provisionCommit(p.ID, "late")); !errors.Is(err, ErrClosed) {
		t.Fatalf("CommitProvision after Close: err = %v, want ErrClosed", err)
	}

	s2 := openTest(t, path)
	defer s2.Close()
	var versions int
	if err := s2.rdb.QueryRowContext(ctx, "SELECT count(*) FROM schema_version").Scan(&versions); err != nil {
		t.Fatal(err)
	}
	if migs, _ := migrations(); versions != len(migs) {
		t.Fatalf("schema_version has %d rows after reopening, want %d (migrations applied once)", versions, len(migs))
	}
	if _, err := s2.GetProfile(ctx, registry.DefaultOrgID, p.ID); err != nil {
		t.Fatalf("profile lost: %v", err)
	}
	for _, c := range commits {
		d, err := s2.GetDevice(ctx, registry.DefaultOrgID, c.Device.ID)
		if err != nil {
			t.Fatalf("device %s lost: %v", c.Device.Name, err)
		}
		if d.Attributes["n"] != c.Device.Name || d.Version != c.Device.Version {
			t.Fatalf("device %s reads back as %+v", c.Device.Name, d)
		}
		if _, _, err := s2.FindActiveCredential(ctx, registry.CredentialAccessToken, "tok-"+c.Device.Name); err != nil {
			t.Fatalf("credential of %s lost: %v", c.Device.Name, err)
		}
	}
	evs, err := s2.ListAudit(ctx, registry.DefaultOrgID, registry.AuditFilter{Limit: 1000})
	if err != nil || len(evs) != len(commits) {
		t.Fatalf("ListAudit after reopen = %d events, %v; want %d", len(evs), err, len(commits))
	}
	if _, err := s2.GetAPIKeyByHash(ctx, "h"); err != nil {
		t.Fatalf("api key lost: %v", err)
	}
}

func TestRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "zerotouch.db")
	s := openTest(t, path)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("INSERT INTO schema_version (version, applied_at) VALUES (999, 0)"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = Open(t.Context(), path, Options{})
	if !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("Open(newer schema): err = %v, want ErrSchemaTooNew", err)
	}
	t.Logf("error shown: %v", err)
}

func TestOpenFailsOnMissingDirectory(t *testing.T) {
	_, err := Open(t.Context(), filepath.Join(t.TempDir(), "missing", "zerotouch.db"), Options{})
	if err == nil {
		t.Fatal("Open in a missing directory succeeded")
	}
}

func TestUnknownOrganisationIsInvalid(t *testing.T) {
	s := newTestStore(t)
	ctx := t.Context()
	p := &registry.Profile{OrgID: storetest.OtherOrgID, Name: "p", Strategy: registry.StrategyAllowCreate,
		ProvisionKey: "k", ProvisionSecretHash: "h", DefaultCredentialType: registry.CredentialAccessToken,
		ReprovisionPolicy: registry.ReprovisionNever}
	if err := s.CreateProfile(ctx, p); !errors.Is(err, registry.ErrInvalid) {
		t.Fatalf("CreateProfile(unknown organisation): err = %v, want ErrInvalid", err)
	}
	ev := registry.AuditEvent{OrgID: storetest.OtherOrgID, Action: "x"}
	if err := s.AppendAudit(ctx, ev); !errors.Is(err, registry.ErrInvalid) {
		t.Fatalf("AppendAudit(unknown organisation): err = %v, want ErrInvalid", err)
	}
	k := &registry.APIKey{OrgID: storetest.OtherOrgID, Name: "k", Role: registry.RoleAdmin, Hash: "h"}
	if err := s.CreateAPIKey(ctx, k); !errors.Is(err, registry.ErrInvalid) {
		t.Fatalf("CreateAPIKey(unknown organisation): err = %v, want ErrInvalid", err)
	}
}

// blockWriter queues a write that holds the writer goroutine until release
// is closed; it returns once the write is running.
func blockWriter(t *testing.T, s *Store) (release func(), done <-chan error) {
	t.Helper()
	started, unblock := make(chan struct{}), make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- s.write(context.Background(), func(context.Context, *sql.Tx) error {
			close(started)
			<-unblock
			return nil
		})
	}()
	<-started
	return func() { close(unblock) }, errc
}

func TestCancelWhileQueued(t *testing.T) {
	s := newTestStore(t)
	p := testProfile(t, s, "p")
	release, blocked := blockWriter(t, s)

	ctx, cancel := context.WithCancel(t.Context())
	c := provisionCommit(p.ID, "cancelled")
	errc := make(chan error, 1)
	go func() { errc <- s.CommitProvision(ctx, c) }()
	waitQueued(t, s, 1)
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("CommitProvision cancelled while queued: err = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a cancelled caller was left hanging while its request was queued")
	}
	release()
	if err := <-blocked; err != nil {
		t.Fatal(err)
	}
	// The abandoned request is skipped, not written.
	if err := s.AppendAudit(t.Context(), registry.AuditEvent{OrgID: registry.DefaultOrgID, Action: "sync"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetDeviceByName(t.Context(), registry.DefaultOrgID, "cancelled"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("device of a withdrawn commit: err = %v, want ErrNotFound", err)
	}
}

func TestCancelAfterClaimCommits(t *testing.T) {
	s := newTestStore(t)
	p := testProfile(t, s, "p")
	release1, blocked1 := blockWriter(t, s)

	// Queue a second blocker and then the commit: the next batch claims both.
	started2, unblock2 := make(chan struct{}), make(chan struct{})
	blocked2 := make(chan error, 1)
	go func() {
		blocked2 <- s.write(context.Background(), func(context.Context, *sql.Tx) error {
			close(started2)
			<-unblock2
			return nil
		})
	}()
	waitQueued(t, s, 1)
	ctx, cancel := context.WithCancel(t.Context())
	c := provisionCommit(p.ID, "claimed")
	errc := make(chan error, 1)
	go func() { errc <- s.CommitProvision(ctx, c) }()
	waitQueued(t, s, 2)
	release1()
	<-started2 // the batch [blocker2, commit] is running: the commit is claimed
	cancel()
	select {
	case err := <-errc:
		t.Fatalf("CommitProvision returned %v while its batch was still running", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(unblock2)
	if err := <-errc; err != nil {
		t.Fatalf("claimed commit: err = %v, want nil (committed despite cancellation)", err)
	}
	for _, e := range []error{<-blocked1, <-blocked2} {
		if e != nil {
			t.Fatal(e)
		}
	}
	if _, err := s.GetDevice(t.Context(), registry.DefaultOrgID, c.Device.ID); err != nil {
		t.Fatalf("claimed commit not written: %v", err)
	}
}

// waitQueued waits until n requests sit in the writer's queue.
func waitQueued(t *testing.T, s *Store, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(s.queue) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests queued, want %d", len(s.queue), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestCloseFinishesQueuedWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "zerotouch.db")
	s := openTest(t, path)
	p := testProfile(t, s, "p")
	const n = 300
	errs := make([]error, n)
	var wg sync.WaitGroup
	var started atomic.Int32
	for i := range n {
		wg.Go(func() {
			started.Add(1)
			errs[i] = s.CommitProvision(context.Background(), provisionCommit(p.ID, fmt.Sprintf("dev-%03d", i)))
		})
	}
	for started.Load() < n/2 {
		time.Sleep(time.Microsecond)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wg.Wait()

	s2 := openTest(t, path)
	defer s2.Close()
	committed := 0
	for i, err := range errs {
		_, gerr := s2.GetDeviceByName(t.Context(), registry.DefaultOrgID, fmt.Sprintf("dev-%03d", i))
		switch {
		case err == nil:
			committed++
			if gerr != nil {
				t.Fatalf("commit %d returned nil but its device is gone after reopening: %v", i, gerr)
			}
		case errors.Is(err, ErrClosed):
			if !errors.Is(gerr, registry.ErrNotFound) {
				t.Fatalf("commit %d was refused (%v) but its device exists", i, err)
			}
		default:
			t.Fatalf("commit %d: unexpected error %v", i, err)
		}
	}
	t.Logf("%d of %d commits made it before Close", committed, n)
}

// BenchmarkCommitProvision measures durable provisioning commits (a new
// device, one access token, one audit event) from many concurrent callers,
// as a provisioning burst produces. Run with e.g.
//
//	go test -run XXX -bench CommitProvision -benchtime 20000x ./internal/store/sqlite/
func BenchmarkCommitProvision(b *testing.B) {
	for _, par := range []int{1, 8, 32, 128} {
		b.Run(fmt.Sprintf("callers=%dxGOMAXPROCS", par), func(b *testing.B) {
			s := newTestStore(b)
			p := testProfile(b, s, "bench")
			var seq atomic.Int64
			b.SetParallelism(par)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := seq.Add(1)
					if err := s.CommitProvision(context.Background(), provisionCommit(p.ID, fmt.Sprintf("dev-%08d", i))); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commits/s")
			if n := s.batches.Load(); n > 0 {
				b.ReportMetric(float64(s.batched.Load())/float64(n), "commits/txn")
			}
		})
	}
}
