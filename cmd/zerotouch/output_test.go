package main

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func TestParseSince(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"1h", now.Add(-time.Hour), true},
		{"90m", now.Add(-90 * time.Minute), true},
		{"2025-05-31T00:00:00Z", time.Date(2025, 5, 31, 0, 0, 0, 0, time.UTC), true},
		{"-1h", time.Time{}, false},
		{"yesterday", time.Time{}, false},
		{"2025-05-31", time.Time{}, false},
	}
	for _, c := range cases {
		got, err := parseSince(c.in, now)
		if (err == nil) != c.ok || !got.Equal(c.want) {
			t.Errorf("parseSince(%q) = %v, %v", c.in, got, err)
		}
	}
}

func TestFormatBytes(t *testing.T) {
	for in, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 64 << 20: "64.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := formatBytes(in); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestProfileRef(t *testing.T) {
	if id, name := profileRef("6d199857-be94-4317-aef7-62ce9aa9f530"); id == "" || name != "" {
		t.Errorf("uuid taken as a name")
	}
	if id, name := profileRef("sensors"); id != "" || name != "sensors" {
		t.Errorf("name taken as an id")
	}
}

func TestProgressOnTerminal(t *testing.T) {
	var w bytes.Buffer
	data := strings.Repeat("x", 5000)
	p := newProgress(iotest.OneByteReader(strings.NewReader(data)), int64(len(data)), &w, "units.csv")
	p.tty = true // as if stderr were a terminal
	if _, err := io.Copy(io.Discard, p); err != nil {
		t.Fatal(err)
	}
	p.done()
	out := w.String()
	if !strings.HasPrefix(out, "\runits.csv: ") || !strings.Contains(out, "/ 4.9 KiB (") || !strings.Contains(out, "\033[Kunits.csv: sent 4.9 KiB of 4.9 KiB in ") {
		t.Errorf("progress output %q", out)
	}
	if strings.Count(out, "\n") != 1 {
		t.Errorf("want one final line, got %q", out)
	}
}

// TestPrintable: what devices send cannot break a table or drive the
// operator's terminal.
func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"plain é":         "plain é",
		"a\tb\nc\r":       `a\tb\nc\r`,
		"\x1b[2J\x1b]0;x": `\x1b[2J\x1b]0;x`,
		"bad\xffutf8":     `bad\xffutf8`,
		"next\u0085line":  `next\u0085line`,
	} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
}
