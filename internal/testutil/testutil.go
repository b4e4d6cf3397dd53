// Package testutil holds helpers shared by the integration tests of several
// packages.
package testutil

import (
	"os"
	"os/exec"
	"testing"
)

// RequireTool returns the path of an external command-line tool a test plays
// a device with (mosquitto_rr, mosquitto_pub…). On a developer's machine
// without it the test is skipped with what to install; in CI (CI set) it
// fails instead, so a missing install step cannot hide behind green skips.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is required in CI: apt-get install mosquitto-clients", name)
	}
	t.Skipf("%s not installed: apt-get install mosquitto-clients to run this test", name)
	return ""
}
