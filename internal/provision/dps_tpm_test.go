package provision

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/zerotouch/zerotouch/internal/allocate"
	"github.com/zerotouch/zerotouch/internal/attest"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/testutil"
)

// The pipeline's side of TPM attestation without a TPM: the key a
// challenge keeps pending is read here instead of being recovered by a
// TPM (internal/server/dps_tpm_test.go, tag tpmsim, runs a real one).

var (
	tpmTestKeysOnce sync.Once
	tpmTestKeys     [3]*rsa.PrivateKey
)

// tpmTestKey is the base64 TPM2B_PUBLIC of software RSA key i in tmpl.
func tpmTestKey(t *testing.T, i int, tmpl tpm2.TPMTPublic) string {
	t.Helper()
	tpmTestKeysOnce.Do(func() {
		for j := range tpmTestKeys {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			tpmTestKeys[j] = k
		}
	})
	tmpl.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: tpmTestKeys[i].N.FillBytes(make([]byte, 256))})
	return base64.StdEncoding.EncodeToString(tpm2.Marshal(tpm2.New2B(tmpl)))
}

func TestTPMStateBounds(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	st := &tpmState{pending: map[string][]tpmPending{}, answers: map[string]tpmAnswer{}}
	ek := []byte("ek-name")
	key := func(b byte) []byte { return []byte{b} }
	for i := range maxTPMPendingPerRegistration + 1 {
		if err := st.add("r1", tpmPending{key: key(byte(i)), ekName: ek, expires: now.Add(time.Minute)}, now); err != nil {
			t.Fatal(err)
		}
	}
	got := st.keys("r1", ek, now)
	if len(got) != maxTPMPendingPerRegistration || got[0][0] != 1 || st.n != maxTPMPendingPerRegistration {
		t.Fatalf("pending keys %v (n=%d): want the %d newest", got, st.n, maxTPMPendingPerRegistration)
	}
	if len(st.keys("r1", []byte("another EK"), now)) != 0 || len(st.keys("r2", ek, now)) != 0 {
		t.Fatal("keys for another EK or registration")
	}
	if len(st.keys("r1", ek, now.Add(time.Minute))) != 0 {
		t.Fatal("expired keys are returned")
	}
	if !st.consume("r1", key(2)) || st.consume("r1", key(2)) {
		t.Fatal("consume: a key is used once")
	}
	if got := st.keys("r1", ek, now); len(got) != maxTPMPendingPerRegistration-1 || st.n != maxTPMPendingPerRegistration-1 {
		t.Fatalf("after consume: %v (n=%d)", got, st.n)
	}

	// The table is bounded: when full of live entries, a challenge is
	// refused as busy; expired entries make room.
	for i := st.n; i < maxTPMPending; i++ {
		if err := st.add(string(rune('a'+i%26))+strings.Repeat("x", i/26), tpmPending{key: key(0), ekName: ek, expires: now.Add(time.Minute)}, now); err != nil {
			t.Fatalf("add %d: %v", i, err)
		}
	}
	if err := st.add("late", tpmPending{key: key(0), ekName: ek, expires: now.Add(time.Minute)}, now); ReasonOf(err) != ReasonBusy {
		t.Fatalf("add to a full table = %v, want busy", err)
	}
	later := now.Add(2 * time.Minute)
	if err := st.add("late", tpmPending{key: key(0), ekName: ek, expires: later.Add(time.Minute)}, later); err != nil || st.n != 1 {
		t.Fatalf("after expiry: %v (n=%d)", err, st.n)
	}

	st.setAnswer("r1", "blob", now)
	if b, ok := st.answer("r1", now.Add(time.Minute)); !ok || b != "blob" {
		t.Fatal("answer not kept")
	}
	if _, ok := st.answer("r1", now.Add(TPMChallengeTTL)); ok {
		t.Fatal("answer kept past its TTL")
	}
}

func TestRegisterTPM(t *testing.T) {
	ctx := t.Context()
	store := testutil.NewStore(t, nil)
	scope, err := store.IDScope(ctx, registry.DefaultOrgID)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	svc := New(Options{Store: store, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: func() time.Time { return now },
		Limiter: &FailureLimiter{Burst: 1 << 20, Leak: time.Second, Base: time.Millisecond, Max: time.Millisecond, MaxSources: 16},
		DPS: DPSOptions{Hubs: func() []allocate.Hub {
			return []allocate.Hub{{Name: "hub.example", Weight: 1, Enabled: true}}
		}}})
	ek, srk := tpmTestKey(t, 0, tpm2.RSAEKTemplate), tpmTestKey(t, 1, tpm2.RSASRKTemplate)
	if err := store.CreateEnrollment(ctx, &registry.Enrollment{OrgID: registry.DefaultOrgID, RegistrationID: "tpm-1",
		Attestation:        registry.Attestation{Type: registry.AttestationTPM, TPM: &registry.TPMAttestation{EndorsementKey: ek}},
		EnrollmentPolicies: registry.EnrollmentPolicies{Status: registry.EnrollmentEnabled, ReprovisionPolicy: registry.EnrollmentReprovisionReset}}); err != nil {
		t.Fatal(err)
	}
	req := func(regID, ek, token string) RegistrationRequest {
		return RegistrationRequest{Transport: "https", Source: "192.0.2.1", IDScope: scope, RegistrationID: regID,
			SASToken: token, TPM: &TPMEvidence{EndorsementKey: ek, StorageRootKey: srk}}
	}
	resource := attest.RegistrationResource(scope, "tpm-1")
	pendingKey := func() string {
		t.Helper()
		ps := svc.tpm().pending[tpmID(registry.DefaultOrgID, "tpm-1")]
		if len(ps) == 0 {
			t.Fatal("no pending key")
		}
		return base64.StdEncoding.EncodeToString(ps[len(ps)-1].key)
	}
	sign := func(key string) string {
		tok, err := attest.Sign(resource, attest.RegistrationKeyName, key, now.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}

	ch, err := svc.ChallengeTPM(ctx, req("TPM-1", ek, ""))
	if err != nil || ch.KeyName != "registration" || ch.AuthenticationKey == "" {
		t.Fatalf("ChallengeTPM = %+v, %v", ch, err)
	}
	key := pendingKey()
	if _, err := svc.Register(ctx, req("tpm-1", ek, sign(base64.StdEncoding.EncodeToString(make([]byte, 32))))); ReasonOf(err) != ReasonBadKeyOrSecret {
		t.Fatalf("token signed with another key: %v, want bad-key-or-secret", err)
	}
	res, err := svc.Register(ctx, req("tpm-1", ek, sign(key)))
	if err != nil {
		t.Fatal(err)
	}
	if res.Registration.AssignedHub != "hub.example" || res.Device.Name != "tpm-1" {
		t.Fatalf("result %+v", res)
	}
	cred, _, err := store.FindActiveCredential(ctx, registry.CredentialSymmetricKey, "tpm-1")
	if err != nil || cred.SymmetricKey.PrimaryKey != key || cred.SymmetricKey.SecondaryKey != "" {
		t.Fatalf("hub credential %+v, %v: want the TPM's key", cred, err)
	}
	if blob, ok := svc.TPMAuthenticationKey(ctx, scope, "TPM-1"); !ok || blob == "" || blob == ch.AuthenticationKey {
		t.Fatal("no fresh activation blob for the assigned answer")
	}
	evs, _ := store.ListAudit(ctx, registry.DefaultOrgID, registry.AuditFilter{Limit: 10})
	if len(evs) == 0 || !strings.Contains(evs[0].Detail, "tpm over https") {
		t.Fatalf("audit %+v: want the success with its attestation", evs)
	}

	for _, tc := range []struct {
		name   string
		do     func() error
		reason Reason
		msg    string
	}{
		{"replayed token", func() error { _, err := svc.Register(ctx, req("tpm-1", ek, sign(key))); return err }, ReasonBadKeyOrSecret, "no TPM challenge is pending"},
		{"another EK", func() error {
			_, err := svc.ChallengeTPM(ctx, req("tpm-1", tpmTestKey(t, 2, tpm2.RSAEKTemplate), ""))
			return err
		},
			ReasonNotEnrolled, "not the one enrolled"},
		{"another EK, second step", func() error {
			_, err := svc.Register(ctx, req("tpm-1", tpmTestKey(t, 2, tpm2.RSAEKTemplate), sign(key)))
			return err
		}, ReasonNotEnrolled, "not the one enrolled"},
		{"unknown registration", func() error { _, err := svc.ChallengeTPM(ctx, req("ghost", ek, "")); return err }, ReasonNotEnrolled, "no enrollment"},
		{"EK not base64", func() error { _, err := svc.ChallengeTPM(ctx, req("tpm-1", "%%%", "")); return err }, ReasonBadRequest, "endorsement key"},
		{"no SRK", func() error {
			r := req("tpm-1", ek, "")
			r.TPM.StorageRootKey = ""
			_, err := svc.ChallengeTPM(ctx, r)
			return err
		}, ReasonBadRequest, "no TPM storage root key"},
		{"expired challenge", func() error {
			if _, err := svc.ChallengeTPM(ctx, req("tpm-1", ek, "")); err != nil {
				return err
			}
			k := pendingKey()
			now = now.Add(TPMChallengeTTL)
			defer func() { now = now.Add(-TPMChallengeTTL) }()
			_, err := svc.Register(ctx, req("tpm-1", ek, sign(k)))
			return err
		}, ReasonBadKeyOrSecret, "no TPM challenge is pending"},
	} {
		err := tc.do()
		if ReasonOf(err) != tc.reason || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v, want %s saying %q", tc.name, err, tc.reason, tc.msg)
		}
	}
}

// Someone replaying a device's public EK cannot push the device's pending
// key out at will: a registration gets one new challenge every
// tpmChallengeSpacing, so the device keeps time to answer its own.
func TestTPMChallengesSpaced(t *testing.T) {
	ctx := context.Background()
	store := testutil.NewStore(t, nil)
	scope, _ := store.IDScope(ctx, registry.DefaultOrgID)
	now := time.Now()
	svc := New(Options{Store: store, Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return now },
		Limiter: &FailureLimiter{Burst: 1 << 20, Leak: time.Second, Base: time.Millisecond, Max: time.Millisecond, MaxSources: 16},
		DPS:     DPSOptions{Hubs: func() []allocate.Hub { return []allocate.Hub{{Name: "hub.example", Weight: 1, Enabled: true}} }}})
	ek, srk := tpmTestKey(t, 0, tpm2.RSAEKTemplate), tpmTestKey(t, 1, tpm2.RSASRKTemplate)
	attackerSRK := tpmTestKey(t, 2, tpm2.RSASRKTemplate)
	if err := store.CreateEnrollment(ctx, &registry.Enrollment{OrgID: registry.DefaultOrgID, RegistrationID: "tpm-1",
		Attestation:        registry.Attestation{Type: registry.AttestationTPM, TPM: &registry.TPMAttestation{EndorsementKey: ek}},
		EnrollmentPolicies: registry.EnrollmentPolicies{Status: registry.EnrollmentEnabled, ReprovisionPolicy: registry.EnrollmentReprovisionReset}}); err != nil {
		t.Fatal(err)
	}
	req := func(src, srk, tok string) RegistrationRequest {
		return RegistrationRequest{Transport: "https", Source: src, IDScope: scope, RegistrationID: "tpm-1", SASToken: tok,
			TPM: &TPMEvidence{EndorsementKey: ek, StorageRootKey: srk}}
	}
	if _, err := svc.ChallengeTPM(ctx, req("192.0.2.1", srk, "")); err != nil {
		t.Fatal(err)
	}
	deviceKey := base64.StdEncoding.EncodeToString(svc.tpm().pending[tpmID(registry.DefaultOrgID, "tpm-1")][0].key)
	for i := range maxTPMPendingPerRegistration {
		if _, err := svc.ChallengeTPM(ctx, req("198.51.100."+strconv.Itoa(i+1), attackerSRK, "")); ReasonOf(err) != ReasonBusy {
			t.Fatalf("replayed challenge %d right after the device's: err %v, want busy", i, err)
		}
	}
	tok, err := attest.Sign(attest.RegistrationResource(scope, "tpm-1"), attest.RegistrationKeyName, deviceKey, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Register(ctx, req("192.0.2.1", srk, tok)); err != nil {
		t.Fatalf("the device's second step after the replays: %v", err)
	}
	// Spaced out, challenges are made again.
	now = now.Add(tpmChallengeSpacing)
	if _, err := svc.ChallengeTPM(ctx, req("192.0.2.1", srk, "")); err != nil {
		t.Fatalf("a challenge after the spacing: %v", err)
	}
}
