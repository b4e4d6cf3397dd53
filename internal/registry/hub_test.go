package registry

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateHubName(t *testing.T) {
	for name, ok := range map[string]bool{
		"hub.example.com":                true,
		"Hub-EU.Example.COM":             true,
		"hub.example.com:8883":           true,
		"hub:1":                          true,
		"hub:65535":                      true,
		"10.1.2.3:1883":                  true,
		"localhost":                      true,
		"a" + strings.Repeat(".b", 60):   true,
		"":                               false,
		"hub:0":                          false,
		"hub:65536":                      false,
		"hub:08883":                      false,
		"hub:+1":                         false,
		"hub:":                           false,
		":8883":                          false,
		"hub:1:2":                        false,
		"[::1]:8883":                     false,
		"::1":                            false,
		"hub..example.com":               false,
		".hub":                           false,
		"hub.":                           false,
		"-hub":                           false,
		"hub-":                           false,
		"hub_eu":                         false,
		"hub eu":                         false,
		"hub/eu":                         false,
		"hüb.example.com":                false,
		strings.Repeat("a", 64):          false,
		strings.Repeat("a.", 64) + "com": false,
	} {
		err := ValidateHubName(name)
		if (err == nil) != ok {
			t.Errorf("ValidateHubName(%q) = %v, want ok=%v", name, err, ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateHubName(%q) = %v, not ErrInvalid", name, err)
		}
	}
}

func TestHubValidate(t *testing.T) {
	h := Hub{Name: "hub.example.com", Weight: 0, Region: "eu-west_1.a"}
	if err := h.Validate(); err != nil {
		t.Fatalf("Validate(weight 0) = %v", err)
	}
	for _, bad := range []Hub{
		{Name: "hub.example.com", Weight: -1},
		{Name: "hub.example.com", Weight: MaxHubWeight + 1},
		{Name: "hub.example.com", Region: "eu west"},
		{Name: "hub.example.com", Region: strings.Repeat("r", MaxHubRegionLen+1)},
		{Name: "hub example"},
	} {
		if err := bad.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("Validate(%+v) = %v, want ErrInvalid", bad, err)
		}
	}
	if HubKey("Hub.Example.COM:8883") != "hub.example.com:8883" {
		t.Error("HubKey does not lower-case")
	}
}
