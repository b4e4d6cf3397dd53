// Package allocate chooses the hub a device is assigned to when it
// registers, as Azure IoT Hub Device Provisioning Service (DPS) allocation
// policies do:
//
//   - static: the one hub the enrollment names;
//   - hashed ("evenly weighted distribution"): weighted rendezvous hashing
//     of the registration id over the candidate hubs, so a device lands on
//     the same hub every time while the hub set is unchanged, and adding a
//     hub moves only the devices the new hub wins;
//   - geoLatency ("lowest latency"): the hubs of the device's region,
//     lowest measured latency first, hashed among equals; hashed over all
//     candidates when no hub is in the device's region;
//   - custom: a webhook speaking DPS's AllocationRequest/AllocationResponse
//     JSON decides, and may return an initial twin and a payload.
//
// The package holds no state but its options: the caller gives the hubs
// and the registration on every call.
package allocate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/zerotouch/zerotouch/internal/registry"
)

// Errors of Allocate, tested with errors.Is. Invalid requests (an unknown
// policy, a static enrollment without exactly one hub, a custom policy
// without a webhook URL) wrap registry.ErrInvalid instead.
var (
	// ErrNoHub: no enabled hub can take the device (none named, none
	// enabled, none known, or every candidate has weight 0).
	ErrNoHub = errors.New("no hub available")
	// ErrWebhookUnavailable: the custom allocation webhook could not be
	// reached, timed out, or kept answering 5xx/429 until the retries or
	// the context ran out. Retrying the registration later may succeed.
	ErrWebhookUnavailable = errors.New("custom allocation webhook unavailable")
	// ErrWebhookBadAnswer: the webhook answered, but not with a usable
	// allocation (a refusal status, a body that is not the expected JSON,
	// too large, or a hub that is not one of the linked hubs). Retrying
	// will not help until the webhook or the enrollment changes.
	ErrWebhookBadAnswer = errors.New("custom allocation webhook gave a bad answer")
)

// Hub is an IoT hub devices can be assigned to, as registered in
// zerotouch.
type Hub struct {
	// Name is the hub's host name, given to devices verbatim as their
	// assigned hub.
	Name string
	// Weight is the hub's share of devices under the hashed policy (and
	// among region-mates under geoLatency), relative to the other
	// candidates' weights. 0 (or negative) means the hub receives no new
	// devices from those policies; static and custom allocation ignore it.
	Weight int
	// Region names where the hub is, for geoLatency; compared without
	// regard to case.
	Region string
	// Latency is a measured latency to the hub, 0 when unknown; under
	// geoLatency the region-mates of lowest latency are preferred.
	Latency time.Duration
	// Enabled hubs take devices; a disabled hub is never chosen.
	Enabled bool
}

// Request is one registration to allocate.
type Request struct {
	// RegistrationID is the device's DPS registration id; the hashed
	// policies hash it, so it must be given in its stored (lower-case)
	// form to be stable. Required.
	RegistrationID string
	// Policy is the enrollment's allocation policy; AllocationDefault
	// means the Allocator's default.
	Policy registry.AllocationPolicy
	// IoTHubs are the enrollment's hub names (host names, compared
	// without regard to case); empty means every enabled hub.
	IoTHubs []string
	// Region is the device's region when known (given by the device, or
	// found from its source address with a RegionMap); used by geoLatency.
	Region string
	// CurrentHub and CurrentDeviceID are the device's current assignment
	// when it registers again; empty on a first registration. Only the
	// custom webhook is told of them (currentIotHubHostName,
	// currentDeviceId), as DPS does: the other policies are already
	// stable for a registration id.
	CurrentHub      string
	CurrentDeviceID string
	// Webhook carries what the custom policy's webhook is sent; nil is
	// allowed (the Allocator's default webhook is then called with the
	// registration id alone).
	Webhook *WebhookRequest
}

// Result is the allocation.
type Result struct {
	// Hub is the chosen hub's Name.
	Hub string
	// Policy is the policy that was applied (the default resolved).
	Policy registry.AllocationPolicy
	// InitialTwin is the twin the custom webhook returned, to use instead
	// of the enrollment's; nil when the webhook returned none (or for the
	// other policies): use the enrollment's.
	InitialTwin *registry.InitialTwin
	// Payload is the payload the custom webhook returned for the device,
	// to use instead of the enrollment's; nil when none.
	Payload json.RawMessage
	// Attempts lists each call of the custom webhook, for the audit
	// trail. Allocate fills it also when it fails.
	Attempts []Attempt
}

// Attempt is one HTTP call of the custom allocation webhook.
type Attempt struct {
	Start    time.Time     `json:"start"`
	Duration time.Duration `json:"duration"`
	// Status is the HTTP status, 0 when no response arrived.
	Status int `json:"status,omitempty"`
	// Error says why the attempt failed, empty when it succeeded. It
	// never contains the webhook URL's query, where keys usually are.
	Error string `json:"error,omitempty"`
}

// Defaults of Options and Webhook.
const (
	DefaultWebhookTimeout   = 5 * time.Second
	DefaultWebhookRetries   = 2
	DefaultWebhookBackoff   = 100 * time.Millisecond
	DefaultMaxResponseBytes = 64 << 10
	// DefaultAPIKeyHeader is the header Azure Functions read a function
	// key from.
	DefaultAPIKeyHeader = "x-functions-key"
)

// Options configure an Allocator. The zero value is usable: hashed by
// default, webhooks need a URL in each request.
type Options struct {
	// DefaultPolicy is applied to requests with AllocationDefault; empty
	// means AllocationHashed.
	DefaultPolicy registry.AllocationPolicy
	// Webhook is the instance's custom allocation webhook, used for
	// requests whose WebhookRequest names none; its unset fields also
	// fill those of a request's webhook.
	Webhook Webhook
	// HTTPClient calls webhooks; nil means a client that does not follow
	// redirects (a webhook that moves is a configuration to fix, and a
	// redirect would resend the device's data elsewhere). Per-attempt
	// timeouts come from contexts, not from the client.
	HTTPClient *http.Client
	// LatencyTolerance makes geoLatency treat hubs whose Latency is within
	// this much of the lowest as equally near, hashing devices across
	// them; 0 means only the lowest (DPS's rule), which concentrates a
	// region on one hub and follows every change of measurement.
	LatencyTolerance time.Duration
	// WebhookBackoff is the wait before the first webhook retry, doubled
	// at each further retry; 0 means DefaultWebhookBackoff.
	WebhookBackoff time.Duration
	// MaxResponseBytes caps a webhook's response body; 0 means
	// DefaultMaxResponseBytes.
	MaxResponseBytes int64
}

// Allocator applies allocation policies. It is safe for concurrent use.
type Allocator struct {
	opts   Options
	client *http.Client
}

// New returns an Allocator with opts.
func New(opts Options) *Allocator {
	if opts.DefaultPolicy == registry.AllocationDefault {
		opts.DefaultPolicy = registry.AllocationHashed
	}
	if opts.WebhookBackoff <= 0 {
		opts.WebhookBackoff = DefaultWebhookBackoff
	}
	if opts.MaxResponseBytes <= 0 {
		opts.MaxResponseBytes = DefaultMaxResponseBytes
	}
	client := opts.HTTPClient
	if client == nil {
		client = &http.Client{
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return &Allocator{opts: opts, client: client}
}

// Allocate chooses the hub for req among hubs. Errors wrap ErrNoHub,
// ErrWebhookUnavailable, ErrWebhookBadAnswer or registry.ErrInvalid; the
// Result's Attempts are filled even on error.
func (a *Allocator) Allocate(ctx context.Context, hubs []Hub, req Request) (Result, error) {
	if req.RegistrationID == "" {
		return Result{}, fmt.Errorf("%w: allocation needs a registration id", registry.ErrInvalid)
	}
	policy := req.Policy
	if policy == registry.AllocationDefault {
		policy = a.opts.DefaultPolicy
	}
	res := Result{Policy: policy}
	var err error
	switch policy {
	case registry.AllocationStatic:
		res.Hub, err = allocateStatic(hubs, req.IoTHubs)
	case registry.AllocationHashed:
		res.Hub, err = allocateHashed(hubs, req)
	case registry.AllocationGeoLatency:
		res.Hub, err = allocateGeo(hubs, req, a.opts.LatencyTolerance)
	case registry.AllocationCustom:
		return a.allocateCustom(ctx, hubs, req, res)
	default:
		err = fmt.Errorf("%w: unknown allocation policy %q", registry.ErrInvalid, policy)
	}
	if err != nil {
		return res, err
	}
	return res, nil
}

// allocateStatic returns the one named hub, if it is known and enabled.
// Its weight does not matter: the operator named it.
func allocateStatic(hubs []Hub, names []string) (string, error) {
	if len(names) != 1 {
		return "", fmt.Errorf("%w: the static allocation policy needs exactly one IoT hub (%d given)", registry.ErrInvalid, len(names))
	}
	h, ok := findHub(hubs, names[0])
	switch {
	case !ok:
		return "", fmt.Errorf("%w: the enrollment's hub %q is not registered", ErrNoHub, names[0])
	case !h.Enabled:
		return "", fmt.Errorf("%w: the enrollment's hub %q is disabled", ErrNoHub, h.Name)
	}
	return h.Name, nil
}

func allocateHashed(hubs []Hub, req Request) (string, error) {
	cands, err := weighted(hubs, req.IoTHubs)
	if err != nil {
		return "", err
	}
	return rendezvous(cands, req.RegistrationID).Name, nil
}

// allocateGeo hashes among the region-mates of lowest latency (within the
// tolerance); region-mates of unknown latency count only when none is
// measured, and hubs of other regions only when the device has no
// region-mate.
func allocateGeo(hubs []Hub, req Request, tolerance time.Duration) (string, error) {
	cands, err := weighted(hubs, req.IoTHubs)
	if err != nil {
		return "", err
	}
	var mates []Hub
	if req.Region != "" {
		for _, h := range cands {
			if strings.EqualFold(h.Region, req.Region) {
				mates = append(mates, h)
			}
		}
	}
	if len(mates) == 0 {
		return rendezvous(cands, req.RegistrationID).Name, nil
	}
	var lowest time.Duration
	for _, h := range mates {
		if h.Latency > 0 && (lowest == 0 || h.Latency < lowest) {
			lowest = h.Latency
		}
	}
	if lowest == 0 {
		return rendezvous(mates, req.RegistrationID).Name, nil
	}
	var near []Hub
	for _, h := range mates {
		if h.Latency > 0 && h.Latency-lowest <= tolerance {
			near = append(near, h)
		}
	}
	return rendezvous(near, req.RegistrationID).Name, nil
}

// candidates returns the enabled hubs among names (all enabled hubs when
// names is empty), each once, in the order of names or of hubs. Names the
// hub list does not know are skipped: a hub removed after the enrollment
// was written must not block the enrollment's other hubs.
func candidates(hubs []Hub, names []string) ([]Hub, error) {
	var out []Hub
	seen := make(map[string]bool)
	add := func(h Hub) {
		k := strings.ToLower(h.Name)
		if h.Enabled && h.Name != "" && !seen[k] {
			seen[k] = true
			out = append(out, h)
		}
	}
	if len(names) == 0 {
		for _, h := range hubs {
			add(h)
		}
	} else {
		for _, n := range names {
			if h, ok := findHub(hubs, n); ok {
				add(h)
			}
		}
	}
	if len(out) == 0 {
		if len(names) == 0 {
			return nil, fmt.Errorf("%w: no enabled hub is registered", ErrNoHub)
		}
		return nil, fmt.Errorf("%w: none of the enrollment's hubs %q is registered and enabled", ErrNoHub, names)
	}
	return out, nil
}

// weighted returns the candidates of positive weight.
func weighted(hubs []Hub, names []string) ([]Hub, error) {
	cands, err := candidates(hubs, names)
	if err != nil {
		return nil, err
	}
	out := cands[:0:0]
	for _, h := range cands {
		if h.Weight > 0 {
			out = append(out, h)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: every candidate hub has weight 0 (takes no new devices)", ErrNoHub)
	}
	return out, nil
}

// findHub returns the first hub named name, without regard to case (host
// names are case-insensitive).
func findHub(hubs []Hub, name string) (Hub, bool) {
	for _, h := range hubs {
		if strings.EqualFold(h.Name, name) {
			return h, true
		}
	}
	return Hub{}, false
}
