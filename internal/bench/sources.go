package bench

import (
	"fmt"
	"net"
	"strings"
)

// DefaultSources is how many loopback source addresses a storm against a
// loopback target spreads over: the hub admits at most 128 connections
// waiting for their CONNECT and 256 provisioning sessions per source host,
// so 16 addresses leave room for 2,048 devices in flight.
const DefaultSources = 16

// sourceAddrs returns the source addresses to dial target from: when the
// target is an IPv4 loopback address (or localhost), 127.0.0.2 to
// 127.0.0.(n+1), which Linux answers for without configuration; otherwise
// nil, meaning the system's choice, since a remote server sees one host
// anyway.
func sourceAddrs(target string, n int) ([]net.IP, error) {
	host, _, err := net.SplitHostPort(target)
	if err != nil {
		return nil, fmt.Errorf("MQTT address %q: %w", target, err)
	}
	ip := net.ParseIP(host)
	if strings.EqualFold(host, "localhost") {
		ip = net.IPv4(127, 0, 0, 1)
	}
	if ip == nil || ip.To4() == nil || !ip.IsLoopback() || n <= 1 {
		return nil, nil
	}
	if n > 253 {
		return nil, fmt.Errorf("--sources %d: at most 253 (127.0.0.2–127.0.0.254)", n)
	}
	ips := make([]net.IP, n)
	for i := range ips {
		ips[i] = net.IPv4(127, 0, 0, byte(i+2))
	}
	return ips, nil
}

// FileLimitError says that the process may not open the files a run
// needs, and what to raise.
type FileLimitError struct {
	Need, Limit uint64
	// What needs the files (default: keeping the devices connected).
	What string
	// Instead is what else to do (default: run without --keep-connected).
	Instead string
}

func (e *FileLimitError) Error() string {
	instead := e.Instead
	if instead == "" {
		instead = "run fewer devices, or run without --keep-connected"
	}
	what := e.What
	if what == "" {
		what = "keeping the devices connected"
	}
	return fmt.Sprintf("%s needs about %d open files, and this process may open at most %d (the hard limit): "+
		"raise it (e.g. 'ulimit -n %d' as root or in limits.conf, LimitNOFILE= for a service), %s",
		what, e.Need, e.Limit, e.Need, instead)
}
