package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// Source produces one telemetry message: a JSON object, as ThingsBoard's
// v1/devices/me/telemetry takes it.
type Source interface {
	Read(ctx context.Context) (json.RawMessage, error)
}

// newSource builds the source the configuration names.
func newSource(c TelemetryConfig, timeout time.Duration) Source {
	switch c.Source {
	case SourceCommand:
		return commandSource{command: c.Command, timeout: timeout}
	case SourceFile:
		return fileSource{path: c.File}
	default:
		return &SystemSource{Root: "/"}
	}
}

// commandSource runs a command whose standard output is the message.
type commandSource struct {
	command string
	timeout time.Duration
}

func (s commandSource) Read(ctx context.Context) (json.RawMessage, error) {
	out, err := runJSON(ctx, s.command, nil, s.timeout)
	if err != nil {
		return nil, fmt.Errorf("telemetry command: %w", err)
	}
	return checkObject(out, "telemetry command")
}

// fileSource reads a file that something else (a sensor daemon) keeps up
// to date.
type fileSource struct{ path string }

func (s fileSource) Read(context.Context) (json.RawMessage, error) {
	b, err := os.ReadFile(s.path)
	if err != nil {
		return nil, fmt.Errorf("telemetry file: %w", err)
	}
	return checkObject(b, "telemetry file "+s.path)
}

// checkObject makes sure b is one JSON object: the server would drop
// anything else on MQTT 3.1.1 without a word, so the agent says it here.
func checkObject(b []byte, what string) (json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: want a JSON object: %v", what, err)
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("%s: empty object, nothing to send", what)
	}
	return json.RawMessage(b), nil
}
