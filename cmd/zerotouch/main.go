// Command zerotouch is the zero-touch provisioning server and device hub, and
// the command-line client of its management API.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// exitError carries a process exit code out of a command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// Exit codes.
const (
	exitFailure = 1 // the operation failed (server said no, I/O error)
	exitUsage   = 2 // bad flags or arguments
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCmd()
	err := root.ExecuteContext(ctx)
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "zerotouch:", err)
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		os.Exit(ee.code)
	case strings.HasPrefix(err.Error(), "unknown command"):
		// cobra's own check of the root's arguments, which it reports as a
		// plain error.
		os.Exit(exitUsage)
	}
	os.Exit(exitFailure)
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "zerotouch",
		Short:         "Zero-touch provisioning server and device hub for IoT fleets",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &exitError{code: exitUsage, err: fmt.Errorf("%w (see '%s --help')", err, c.CommandPath())}
	})
	client := &clientOptions{}
	client.register(root)
	root.AddCommand(
		newServeCmd(),
		newProfileCmd(client),
		newDeviceCmd(client),
		newCredentialCmd(client),
		newTelemetryCmd(client),
		newAttributesCmd(client),
		newRPCCmd(client),
		newMessageCmd(client),
		newAuditCmd(client),
		newAPIKeyCmd(client),
		newCACmd(client),
		newCertCmd(client),
		newEnrollmentCmd(client),
		newIDScopeCmd(client),
		newHubCmd(client),
		newBenchCmd(client),
	)
	return root
}
