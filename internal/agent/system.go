package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// SystemSource reports the host's own metrics, read from Linux's /proc and
// /sys without any dependency:
//
//	cpu          CPU use in % since the previous reading (/proc/stat)
//	memory       memory in use in %, (MemTotal-MemAvailable)/MemTotal (/proc/meminfo)
//	load1, load5, load15   load averages (/proc/loadavg)
//	uptime       seconds since boot (/proc/uptime)
//	temperature  °C of the hottest /sys/class/thermal/thermal_zone*
//
// A metric the host does not offer (no thermal zone in a container, another
// OS) is left out; Read fails only when none is available.
type SystemSource struct {
	// Root is prepended to /proc and /sys paths ("/" normally; a directory
	// of fixtures in tests).
	Root string

	mu   sync.Mutex
	prev *cpuTimes
}

type cpuTimes struct{ idle, total uint64 }

// Read returns the metrics as one JSON object.
func (s *SystemSource) Read(ctx context.Context) (json.RawMessage, error) {
	m := map[string]any{}
	if pct, ok := s.cpuPercent(ctx); ok {
		m["cpu"] = round2(pct)
	}
	if pct, ok := s.memoryPercent(); ok {
		m["memory"] = round2(pct)
	}
	if f := s.fields("proc/loadavg"); len(f) >= 3 {
		for i, k := range []string{"load1", "load5", "load15"} {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				m[k] = v
			}
		}
	}
	if f := s.fields("proc/uptime"); len(f) >= 1 {
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			m["uptime"] = math.Round(v)
		}
	}
	if t, ok := s.temperature(); ok {
		m["temperature"] = round2(t)
	}
	if len(m) == 0 {
		return nil, errors.New("system metrics: none available (is /proc mounted? telemetry source system needs Linux)")
	}
	return json.Marshal(m)
}

func (s *SystemSource) path(rel string) string { return filepath.Join(s.Root, rel) }

func (s *SystemSource) fields(rel string) []string {
	b, err := os.ReadFile(s.path(rel))
	if err != nil {
		return nil
	}
	return strings.Fields(string(b))
}

// cpuPercent compares /proc/stat with the previous reading; the first time
// it takes two readings a quarter of a second apart.
func (s *SystemSource) cpuPercent(ctx context.Context) (float64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.cpuTimes()
	if !ok {
		return 0, false
	}
	prev := s.prev
	if prev == nil {
		if !sleep(ctx, 250*time.Millisecond) {
			return 0, false
		}
		prev = cur
		if cur, ok = s.cpuTimes(); !ok {
			return 0, false
		}
	}
	s.prev = cur
	dt := cur.total - prev.total
	if cur.total < prev.total || cur.idle < prev.idle || dt == 0 {
		return 0, dt == 0 && cur.total >= prev.total // no time passed: 0 %
	}
	busy := dt - (cur.idle - prev.idle)
	return 100 * float64(busy) / float64(dt), true
}

// cpuTimes reads the aggregate "cpu" line: user nice system idle iowait irq
// softirq steal …; idle time is idle + iowait. guest and guest_nice are
// already counted in user and nice, so they are not added again.
func (s *SystemSource) cpuTimes() (*cpuTimes, bool) {
	f, err := os.Open(s.path("proc/stat"))
	if err != nil {
		return nil, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 5 || fs[0] != "cpu" {
			continue
		}
		var t cpuTimes
		for i, v := range fs[1:] {
			if i >= 8 {
				break
			}
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return nil, false
			}
			t.total += n
			if i == 3 || i == 4 {
				t.idle += n
			}
		}
		return &t, true
	}
	return nil, false
}

func (s *SystemSource) memoryPercent() (float64, bool) {
	b, err := os.ReadFile(s.path("proc/meminfo"))
	if err != nil {
		return 0, false
	}
	var total, avail float64
	var haveAvail bool
	for line := range bytes.Lines(b) {
		fs := strings.Fields(string(line))
		if len(fs) < 2 {
			continue
		}
		v, err := strconv.ParseFloat(fs[1], 64)
		if err != nil {
			continue
		}
		switch fs[0] {
		case "MemTotal:":
			total = v
		case "MemAvailable:":
			avail, haveAvail = v, true
		}
	}
	if total <= 0 || !haveAvail {
		return 0, false
	}
	return 100 * (total - avail) / total, true
}

// temperature is the hottest thermal zone, in °C (the kernel reports
// millidegrees).
func (s *SystemSource) temperature() (float64, bool) {
	zones, _ := filepath.Glob(s.path("sys/class/thermal/thermal_zone*/temp"))
	best, ok := math.Inf(-1), false
	for _, z := range zones {
		b, err := os.ReadFile(z)
		if err != nil {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(string(b)), 64)
		if err != nil {
			continue
		}
		if v/1000 > best {
			best, ok = v/1000, true
		}
	}
	return best, ok
}

func round2(v float64) float64 { return math.Round(v*100) / 100 }
