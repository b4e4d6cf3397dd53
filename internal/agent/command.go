package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// maxOutput bounds what is kept of a command's standard output and error,
// so a runaway handler cannot exhaust the memory of a small device.
const maxOutput = 1 << 20

// runJSON runs command (runCommand) and returns its standard output, which
// must be one JSON value.
func runJSON(ctx context.Context, command string, stdin []byte, timeout time.Duration) (json.RawMessage, error) {
	out, err := runCommand(ctx, command, stdin, timeout)
	if err != nil {
		return nil, err
	}
	out = bytes.TrimSpace(out)
	if len(out) == 0 {
		return nil, errors.New("command printed nothing (want JSON)")
	}
	if !json.Valid(out) {
		return nil, fmt.Errorf("command output is not JSON: %.80q", out)
	}
	return json.RawMessage(out), nil
}

// runCommand runs command with /bin/sh -c and stdin as its standard input,
// and returns its standard output. The command is killed when timeout
// passes; a non-zero exit is an error carrying the start of its standard
// error.
func runCommand(ctx context.Context, command string, stdin []byte, timeout time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Stdin = bytes.NewReader(stdin)
	stdout := &limitedBuffer{max: maxOutput}
	stderr := &limitedBuffer{max: 4096}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	// A grandchild holding the pipes open must not hold Wait past the
	// deadline.
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		return nil, fmt.Errorf("command timed out after %s", timeout)
	}
	if err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return nil, fmt.Errorf("command failed: %v: %s", err, msg)
		}
		return nil, fmt.Errorf("command failed: %w", err)
	}
	if stdout.truncated {
		return nil, fmt.Errorf("command output exceeds %d bytes", maxOutput)
	}
	return stdout.Bytes(), nil
}

// errorJSON is the answer of a handler that failed: {"error": "..."}.
func errorJSON(err error) []byte {
	b, _ := json.Marshal(map[string]string{"error": err.Error()})
	return b
}

// limitedBuffer keeps the first max bytes written to it and drops the rest,
// without failing the writer (a failing pipe would kill the command).
type limitedBuffer struct {
	bytes.Buffer
	max       int
	truncated bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); room < len(p) {
		b.truncated = true
		if room > 0 {
			b.Buffer.Write(p[:room])
		}
		return len(p), nil
	}
	return b.Buffer.Write(p)
}
