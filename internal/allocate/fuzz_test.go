package allocate

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/zerotouch/zerotouch/internal/registry"
)

// FuzzParseAnswer: a webhook's answer is untrusted input. Parsing never
// panics, fails only with ErrWebhookBadAnswer, and what it accepts is
// usable as is: a hub name, twin parts that are JSON objects within the
// size limit, a payload of valid JSON.
func FuzzParseAnswer(f *testing.F) {
	for _, s := range []string{
		`{"iotHubHostName":"hub.example.net"}`,
		`{"iotHubHostName":"h","initialTwin":{"tags":{"a":1},"properties":{"desired":{"b":[1,2]}}},"payload":{"x":null}}`,
		`{"iotHubHostname":"h","initialTwin":null,"payload":"s"}`,
		`{"iotHubHostName":"h","initialTwin":{"properties":null}}`,
		`{"IOTHUBHOSTNAME":"h","initialTwin":{"tags":[]}}`,
		`{"iotHubHostName":"h","payload":1e400}`,
		`{"iotHubHostName":"\u0000"}`,
		`{`, ``, `null`, `[{}]`, `{"iotHubHostName":"h"}{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		ans, err := parseAnswer(body)
		if err != nil {
			if !errors.Is(err, ErrWebhookBadAnswer) {
				t.Fatalf("error without ErrWebhookBadAnswer: %v", err)
			}
			return
		}
		if ans.Hub == "" {
			t.Fatal("accepted without a hub")
		}
		if tw := ans.InitialTwin; tw != nil {
			for _, part := range []json.RawMessage{tw.Tags, tw.DesiredProperties} {
				if len(part) == 0 {
					continue
				}
				if len(part) > registry.MaxTwinJSON || !json.Valid(part) || part[0] != '{' {
					t.Fatalf("twin part %q accepted", part)
				}
			}
		}
		// What the caller would store instead of the enrollment's must
		// pass the registry's own checks.
		p := registry.EnrollmentPolicies{
			Status:            registry.EnrollmentEnabled,
			ReprovisionPolicy: registry.EnrollmentReprovisionNever,
			CustomPayload:     ans.Payload,
		}
		if ans.InitialTwin != nil {
			p.InitialTwin = *ans.InitialTwin
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("accepted answer fails registry validation: %v", err)
		}
		if ans.Payload != nil && (!json.Valid(ans.Payload) || len(ans.Payload) > registry.MaxTwinJSON) {
			t.Fatalf("payload %q accepted", ans.Payload)
		}
	})
}

// FuzzParseRegionMap: an operator's file is input too. Parsing never
// panics, and what it accepts prints back to a map that parses to the
// same rules, which all look addresses up without panicking.
func FuzzParseRegionMap(f *testing.F) {
	for _, s := range []string{
		"10.1.0.0/16=eu-west\n# comment\n\n2001:db8::/32 = us-east\n",
		"192.0.2.7=lab",
		"::ffff:10.0.0.0/104=mapped\r\n0.0.0.0/0=any",
		"fe80::1%eth0=x", "=", "10.0.0.0/8=a=b", "\n\n#", "::/0=v6\n0.0.0.0/0=v4",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		m, err := ParseRegionMap(text)
		if err != nil {
			if !errors.Is(err, registry.ErrInvalid) {
				t.Fatalf("error without ErrInvalid: %v", err)
			}
			return
		}
		again, err := ParseRegionMap(m.String())
		if err != nil {
			t.Fatalf("printed map %q does not parse: %v", m.String(), err)
		}
		if again.String() != m.String() {
			t.Fatalf("round trip changed the map: %q → %q", m.String(), again.String())
		}
		for _, r := range m.Rules() {
			if !r.Prefix.IsValid() || r.Prefix != r.Prefix.Masked() {
				t.Fatalf("rule %v not canonical", r)
			}
			got, ok := m.Lookup(r.Prefix.Addr())
			if !ok || got == "" {
				t.Fatalf("a rule's own network %v maps to nothing", r.Prefix)
			}
		}
		m.LookupRemote(text)
	})
}
