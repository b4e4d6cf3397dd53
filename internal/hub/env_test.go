package hub

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/zerotouch/zerotouch/internal/provision"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/secret"
	"github.com/zerotouch/zerotouch/internal/testutil"
)

// Topics and user name of the test provisioning route (ThingsBoard's).
const (
	provUser  = "provision"
	provReq   = "/provision/request"
	provResp  = "/provision/response"
	waitLimit = 10 * time.Second
)

// env is a hub over a real SQLite store, listening on 127.0.0.1:0, with a
// provisioning route that answers "answer:<payload>" and a device topic
// handler that records what devices publish.
type env struct {
	t       testing.TB
	store   registry.Store // notifying: revocations reach the hub
	changes *registry.Changes
	hub     *Hub
	addr    string
	profile *registry.Profile

	provCalls  chan provCall
	devicePubs chan devicePub
	presence   *presenceLog
}

type provCall struct {
	sess    Session
	payload string
}

type devicePub struct {
	sess    DeviceSession
	topic   string
	payload string
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() && os.Getenv("HUB_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// lenientLimiter never delays: tests fail many CONNECTs from 127.0.0.1.
func lenientLimiter() *provision.FailureLimiter {
	return &provision.FailureLimiter{Burst: 1 << 30, Leak: time.Millisecond, Base: time.Millisecond, Max: time.Millisecond, MaxSources: 10}
}

func newEnv(t testing.TB, tweak ...func(*Options)) *env {
	t.Helper()
	ctx := context.Background()
	raw := testutil.NewStore(t, nil)
	changes := &registry.Changes{}
	e := &env{
		t:          t,
		store:      registry.NotifyingStore{Store: raw, Changes: changes},
		changes:    changes,
		provCalls:  make(chan provCall, 1000),
		devicePubs: make(chan devicePub, 1000),
		presence:   &presenceLog{},
	}
	opts := Options{Store: e.store, Changes: changes, Logger: testLogger(t), Limiter: lenientLimiter(), Presence: e.presence}
	for _, f := range tweak {
		f(&opts)
	}
	h, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.hub = h
	h.HandleProvisioning(ProvisioningRoute{
		Username:      provUser,
		RequestTopic:  provReq,
		ResponseTopic: provResp,
		Handle: func(ctx context.Context, s Session, payload []byte) []byte {
			select {
			case e.provCalls <- provCall{sess: s, payload: string(payload)}:
			default: // a fuzz run makes more calls than anyone reads
			}
			return []byte("answer:" + string(payload))
		},
	})
	h.HandleDeviceTopic(DeviceTopicPrefix, func(ctx context.Context, s DeviceSession, topic string, payload []byte) error {
		if err := scriptedRefusal(string(payload)); err != nil {
			return err
		}
		select {
		case e.devicePubs <- devicePub{sess: s, topic: topic, payload: string(payload)}:
		default:
		}
		return nil
	})
	addr, err := h.ListenTCP("mqtt", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("ListenTCP: %v", err)
	}
	e.addr = addr.String()
	if err := h.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := h.Close(); err != nil { // before the store's Close
			t.Errorf("hub Close: %v", err)
		}
	})

	p := registry.Profile{
		OrgID:                 registry.DefaultOrgID,
		Name:                  "sensors",
		Strategy:              registry.StrategyAllowCreate,
		ProvisionKey:          "key-" + secret.Generate(8),
		ProvisionSecretHash:   secret.Hash("secret"),
		DefaultCredentialType: registry.CredentialAccessToken,
		ReprovisionPolicy:     registry.ReprovisionNever,
	}
	if err := e.store.CreateProfile(ctx, &p); err != nil {
		t.Fatalf("CreateProfile: %v", err)
	}
	e.profile = &p
	return e
}

var deviceSeq atomic.Int64

// device creates an enabled (or disabled) device with creds and returns
// it with its credentials as stored.
func (e *env) device(status registry.DeviceStatus, creds ...registry.Credential) (*registry.Device, []registry.Credential) {
	e.t.Helper()
	for i := range creds {
		creds[i].Status = registry.CredentialActive
	}
	nd := []registry.NewDevice{{
		Device: registry.Device{
			OrgID:     registry.DefaultOrgID,
			ProfileID: e.profile.ID,
			Name:      fmt.Sprintf("device-%d", deviceSeq.Add(1)),
			Status:    status,
		},
		Credentials: creds,
	}}
	if err := e.store.CreateDevices(context.Background(), nd); err != nil {
		e.t.Fatalf("CreateDevices: %v", err)
	}
	stored, err := e.store.ListCredentials(context.Background(), registry.DefaultOrgID, nd[0].Device.ID)
	if err != nil {
		e.t.Fatalf("ListCredentials: %v", err)
	}
	return &nd[0].Device, stored
}

func tokenCred(token string) registry.Credential {
	return registry.Credential{Type: registry.CredentialAccessToken, LookupKey: secret.LookupHash(token)}
}

func basicCred(clientID, username, password string) registry.Credential {
	c := registry.Credential{
		Type:      registry.CredentialMQTTBasic,
		ClientID:  clientID,
		Username:  username,
		LookupKey: registry.MQTTBasicLookupKey(clientID, username),
	}
	if password != "" {
		c.SecretHash = secret.Hash(password)
	}
	return c
}

// newToken returns a fresh access token and a device holding it.
func (e *env) tokenDevice() (string, *registry.Device, registry.Credential) {
	e.t.Helper()
	tok := secret.Generate(secret.TokenLength)
	d, creds := e.device(registry.DeviceEnabled, tokenCred(tok))
	return tok, d, creds[0]
}

// pahoClient is a paho MQTT 3.1.1 client that records what it receives
// and when its connection is lost.
type pahoClient struct {
	paho.Client
	msgs chan paho.Message
	lost chan error
}

type pahoConf struct {
	clientID, username, password string
	persistent                   bool // clean session off
	// broker replaces tcp://e.addr (e.g. ssl://host:port); tls configures it.
	broker string
	tls    *tls.Config
}

// dialPaho connects with paho (3.1.1, no reconnection); err is the
// CONNECT's outcome.
func (e *env) dialPaho(c pahoConf) (*pahoClient, error) {
	pc := &pahoClient{msgs: make(chan paho.Message, 100), lost: make(chan error, 1)}
	broker := "tcp://" + e.addr
	if c.broker != "" {
		broker = c.broker
	}
	o := paho.NewClientOptions().
		AddBroker(broker).
		SetClientID(c.clientID).
		SetProtocolVersion(4).
		SetCleanSession(!c.persistent).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(5 * time.Second).
		SetKeepAlive(30 * time.Second).
		SetOrderMatters(true).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { pc.msgs <- m }).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			select {
			case pc.lost <- err:
			default:
			}
		})
	if c.username != "" {
		o.SetUsername(c.username)
	}
	if c.password != "" {
		o.SetPassword(c.password)
	}
	if c.tls != nil {
		o.SetTLSConfig(c.tls)
	}
	pc.Client = paho.NewClient(o)
	tok := pc.Connect()
	if !tok.WaitTimeout(waitLimit) {
		return nil, fmt.Errorf("CONNECT timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	e.t.Cleanup(func() { pc.Disconnect(0) })
	return pc, nil
}

func (e *env) mustPaho(c pahoConf) *pahoClient {
	e.t.Helper()
	pc, err := e.dialPaho(c)
	if err != nil {
		e.t.Fatalf("connect %+v: %v", c.clientID, err)
	}
	return pc
}

// subscribe subscribes and returns the granted code.
func (pc *pahoClient) subscribe(t *testing.T, filter string, qos byte) byte {
	t.Helper()
	tok := pc.Subscribe(filter, qos, nil)
	if !tok.WaitTimeout(waitLimit) {
		t.Fatalf("SUBSCRIBE %q timed out", filter)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("SUBSCRIBE %q: %v", filter, err)
	}
	return tok.(*paho.SubscribeToken).Result()[filter]
}

func (pc *pahoClient) publish(t *testing.T, topic string, qos byte, payload string) {
	t.Helper()
	tok := pc.Publish(topic, qos, false, payload)
	if !tok.WaitTimeout(waitLimit) {
		t.Fatalf("PUBLISH %q timed out", topic)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("PUBLISH %q: %v", topic, err)
	}
}

// next returns the next message received, failing after waitLimit.
func (pc *pahoClient) next(t *testing.T) paho.Message {
	t.Helper()
	select {
	case m := <-pc.msgs:
		return m
	case <-time.After(waitLimit):
		t.Fatalf("no message within %v", waitLimit)
		return nil
	}
}

// waitLost waits for the connection to be lost.
func (pc *pahoClient) waitLost(t *testing.T) {
	t.Helper()
	select {
	case <-pc.lost:
	case <-time.After(waitLimit):
		t.Fatalf("connection still up after %v", waitLimit)
	}
}

// eventually polls cond until it holds, failing after waitLimit.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %v", what, waitLimit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// nextProv returns the next provisioning handler call.
func (e *env) nextProv(t *testing.T) provCall {
	t.Helper()
	select {
	case c := <-e.provCalls:
		return c
	case <-time.After(waitLimit):
		t.Fatalf("provisioning handler not called within %v", waitLimit)
		return provCall{}
	}
}

// nextDevicePub returns the next device publish handed to the handler.
func (e *env) nextDevicePub(t *testing.T) devicePub {
	t.Helper()
	select {
	case p := <-e.devicePubs:
		return p
	case <-time.After(waitLimit):
		t.Fatalf("device topic handler not called within %v", waitLimit)
		return devicePub{}
	}
}
