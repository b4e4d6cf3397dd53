package bench

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// Target is what every bench needs: the server, the profile its devices
// provision with, how they reach it, their names and where progress goes.
type Target struct {
	// MQTTAddr is the server's MQTT listener, host:port. Required.
	MQTTAddr string
	// MetricsURL is the server's HTTP base URL (http://host:port); when
	// set, its /metrics gives the server's side of the report.
	MetricsURL string
	// ProfileKey and ProfileSecret are the provisioning profile's key and
	// secret (an allow-create profile issuing access tokens). Required.
	ProfileKey, ProfileSecret string
	// Sources is how many loopback source addresses to spread over when
	// MQTTAddr is loopback (DefaultSources; 1 means none).
	Sources int
	// Timeout bounds each step of an exchange (DefaultTimeout).
	Timeout time.Duration
	// NamePrefix starts every device name; the device's number follows
	// (default: "bench-" and the start time, so runs do not collide).
	NamePrefix string
	// Progress, when set, receives live progress; ProgressTTY redraws one
	// line with \r instead of printing a line every few seconds.
	Progress    io.Writer
	ProgressTTY bool
}

// validate checks t and fills in its defaults.
func (t *Target) validate() error {
	if t.MQTTAddr == "" {
		return errors.New("no MQTT address")
	}
	if _, _, err := net.SplitHostPort(t.MQTTAddr); err != nil {
		return fmt.Errorf("MQTT address %q: want host:port", t.MQTTAddr)
	}
	if t.ProfileKey == "" || t.ProfileSecret == "" {
		return errors.New("no provisioning profile key and secret")
	}
	if t.Sources == 0 {
		t.Sources = DefaultSources
	}
	if t.Sources < 0 {
		return fmt.Errorf("sources %d: want at least 1", t.Sources)
	}
	if t.Timeout == 0 {
		t.Timeout = DefaultTimeout
	}
	if t.NamePrefix == "" {
		t.NamePrefix = "bench-" + strconv.FormatInt(time.Now().Unix(), 36) + "-"
	}
	return nil
}
