package hub

import (
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/zerotouch/zerotouch/internal/registry"
)

// conn is the hub's record of one live connection, made at CONNECT.
type conn struct {
	h     *Hub
	cl    *mqtt.Client
	sess  Session
	route *ProvisioningRoute // set for a provisioning session
	dev   *DeviceSession     // set for a device session

	revoked    atomic.Bool // from then on the ACL refuses everything
	aclAudited atomic.Bool // one audit event per session for refused topics
	closedSeen bool        // janitor: seen closed once (guarded by sessions.mu)

	// Provisioning sessions only: the source their per-host cap counts
	// (see sourceKey), and their lifetime (see startLifetime).
	source   string
	lifetime *time.Timer
	mu       sync.Mutex
	handling bool // a request is being handled (guarded by mu)
	expired  bool // the lifetime is over (guarded by mu)
}

// Client ids are scoped by identity. mochi keys sessions (takeover, kept
// state, subscriptions) by client id; the hub gives mochi an id that
// embeds who authenticated, so a CONNECT reusing a client id takes over
// (and may resume) only a session of the same device, never another
// device's or a provisioning session's. Two devices that use the same
// client id stay connected side by side, as they do on ThingsBoard. Every
// provisioning session gets an id of its own.
func deviceScopedID(deviceID, clientID string) string { return "d/" + deviceID + "/" + clientID }

func (s *sessions) provisioningScopedID(clientID string) string {
	return "p/" + strconv.FormatUint(s.provSeq.Add(1), 36) + "/" + clientID
}

// recentChanges is how many registry changes are remembered for CONNECTs
// whose credential lookup overlaps them.
const recentChanges = 256

// sessions indexes the live connections.
type sessions struct {
	mu       sync.Mutex
	closed   bool
	live     map[*mqtt.Client]*conn
	byDevice map[string]map[*conn]struct{}
	// bySerial indexes device sessions by the serial of their TLS client
	// certificate: a certificate revocation names serials, not devices
	// (a certificate may be registered to another device than the one it
	// was issued to).
	bySerial map[string]map[*conn]struct{}
	devices  int
	provSeq  atomic.Uint64 // numbers provisioning sessions' client ids

	limits       sessionLimits
	provisioning int            // live provisioning sessions
	provByHost   map[string]int // live provisioning sessions by sourceKey

	// seq counts the changes received; recent[n%recentChanges] is change n.
	seq    uint64
	recent [recentChanges]registry.Change
}

// sessionLimits caps live sessions; 0 means no cap.
type sessionLimits struct {
	total       int // every session (Options.MaxClients)
	prov        int // provisioning sessions
	provPerHost int // provisioning sessions per sourceKey
}

func (s *sessions) init(l sessionLimits) {
	s.live = make(map[*mqtt.Client]*conn)
	s.byDevice = make(map[string]map[*conn]struct{})
	s.bySerial = make(map[string]map[*conn]struct{})
	s.provByHost = make(map[string]int)
	s.limits = l
}

// snapshot returns the change count, to pass to register after a lookup.
func (s *sessions) snapshot() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seq
}

type registerResult int

const (
	registered registerResult = iota
	// changed: a registry change since the snapshot may concern the
	// credential or device just looked up; look it up again.
	changed
	closing
	// Capacity refusals (see capacityRefusal).
	overMaxClients
	overProvisioning
	overProvisioningPerHost
)

// register records c unless the hub is closing, a change received since
// snapshot seq0 may concern it, or a cap is reached. The caps are checked
// here, under the lock that adds the session, so that concurrent CONNECTs
// cannot overshoot them.
func (s *sessions) register(c *conn, seq0 uint64) registerResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return closing
	}
	if s.limits.total > 0 && len(s.live) >= s.limits.total && !s.takesOverLocked(c) {
		return overMaxClients
	}
	if c.route != nil {
		if s.limits.prov > 0 && s.provisioning >= s.limits.prov {
			return overProvisioning
		}
		if s.limits.provPerHost > 0 && s.provByHost[c.source] >= s.limits.provPerHost {
			return overProvisioningPerHost
		}
	}
	if c.dev != nil && s.seq != seq0 {
		if s.seq-seq0 > recentChanges {
			return changed
		}
		for n := seq0 + 1; n <= s.seq; n++ {
			if affects(s.recent[n%recentChanges], c) {
				return changed
			}
		}
	}
	if c.dev != nil {
		set := s.byDevice[c.dev.DeviceID]
		if set == nil {
			set = make(map[*conn]struct{})
			s.byDevice[c.dev.DeviceID] = set
		}
		set[c] = struct{}{}
		s.devices++
		if serial := c.dev.CertificateSerial; serial != "" {
			set := s.bySerial[serial]
			if set == nil {
				set = make(map[*conn]struct{})
				s.bySerial[serial] = set
			}
			set[c] = struct{}{}
		}
	}
	if c.route != nil {
		s.provisioning++
		s.provByHost[c.source]++
	}
	s.live[c.cl] = c
	return registered
}

// takesOverLocked reports whether device session c takes over a live
// session of the same device and client id, which mochi is about to end:
// the number of sessions does not grow.
func (s *sessions) takesOverLocked(c *conn) bool {
	if c.dev == nil {
		return false
	}
	for o := range s.byDevice[c.dev.DeviceID] {
		if o.cl.ID == c.cl.ID {
			return true
		}
	}
	return false
}

func (s *sessions) lookup(cl *mqtt.Client) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live[cl]
}

// unregister forgets cl's connection and returns it (nil if unknown).
// Connections are keyed by mochi client, not by client id, so the end of
// a taken-over connection never removes the one that took over.
func (s *sessions) unregister(cl *mqtt.Client) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.removeLocked(cl)
}

func (s *sessions) removeLocked(cl *mqtt.Client) *conn {
	c := s.live[cl]
	if c == nil {
		return nil
	}
	delete(s.live, cl)
	if c.dev != nil {
		if set := s.byDevice[c.dev.DeviceID]; set != nil {
			delete(set, c)
			if len(set) == 0 {
				delete(s.byDevice, c.dev.DeviceID)
			}
		}
		if set := s.bySerial[c.dev.CertificateSerial]; set != nil {
			delete(set, c)
			if len(set) == 0 {
				delete(s.bySerial, c.dev.CertificateSerial)
			}
		}
		s.devices--
	}
	if c.route != nil {
		s.provisioning--
		if n := s.provByHost[c.source] - 1; n > 0 {
			s.provByHost[c.source] = n
		} else {
			delete(s.provByHost, c.source)
		}
		if c.lifetime != nil {
			c.lifetime.Stop()
		}
	}
	return c
}

// affects reports whether ch ends c's right to stay connected.
func affects(ch registry.Change, c *conn) bool {
	if c.dev == nil {
		return false
	}
	switch ch.Kind {
	case registry.ChangeCredentialsRevoked:
		return slices.Contains(ch.CredentialIDs, c.dev.CredentialID)
	case registry.ChangeDeviceDisabled, registry.ChangeDeviceDeleted:
		return ch.DeviceID == c.dev.DeviceID
	case registry.ChangeCertificatesRevoked:
		return c.dev.CertificateSerial != "" && slices.Contains(ch.Serials, c.dev.CertificateSerial)
	}
	return false
}

// revoke records ch and marks every live session it ends as revoked; it
// returns those sessions. The caller holds s.mu.
func (s *sessions) revoke(ch registry.Change) []*conn {
	s.seq++
	s.recent[s.seq%recentChanges] = ch
	var victims []*conn
	collect := func(c *conn) {
		if affects(ch, c) {
			c.revoked.Store(true)
			victims = append(victims, c)
		}
	}
	switch {
	case ch.Kind == registry.ChangeCertificatesRevoked:
		seen := make(map[string]bool, len(ch.Serials))
		for _, serial := range ch.Serials {
			if !seen[serial] {
				seen[serial] = true
				for c := range s.bySerial[serial] {
					collect(c)
				}
			}
		}
	case ch.DeviceID != "":
		for c := range s.byDevice[ch.DeviceID] {
			collect(c)
		}
	default:
		for _, c := range s.live {
			collect(c)
		}
	}
	return victims
}

// sweep forgets connections that ended without OnDisconnect (mochi skips
// it when the CONNACK cannot be written): those seen closed on two sweeps
// in a row. It returns the device sessions it forgot.
func (s *sessions) sweep() (gone []*conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for cl, c := range s.live {
		if !cl.Closed() {
			continue
		}
		if c.closedSeen {
			if s.removeLocked(cl).dev != nil {
				gone = append(gone, c)
			}
		} else {
			c.closedSeen = true
		}
	}
	return gone
}
