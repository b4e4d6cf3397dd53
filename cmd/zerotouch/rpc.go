package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/zerotouch/zerotouch/internal/api"
	"github.com/zerotouch/zerotouch/internal/apiclient"
)

func newRPCCmd(o *clientOptions) *cobra.Command {
	var (
		timeout time.Duration
		oneWay  bool
	)
	cmd := &cobra.Command{
		Use:   "rpc DEVICE_ID METHOD [PARAMS_JSON]",
		Short: "Send a command (RPC request) to a connected device and print its answer",
		Long: `Send an RPC request to a connected device and wait for its answer, which is
printed as JSON on stdout (whatever -o says). PARAMS_JSON is any JSON value;
quote it for the shell.

With --oneway the command returns once the device took the request, without
waiting for an answer (-o json prints {"delivered": true}).

If the device is not connected (or not subscribed to RPC requests), nothing is
sent and the command fails; if it does not answer within --timeout it fails too,
but the device may still carry the request out.`,
		Example: `  zerotouch rpc 6d199857-be94-4317-aef7-62ce9aa9f530 getTemperature
  zerotouch rpc DEVICE_ID setGpio '{"pin": 4, "value": 1}' --timeout 30s
  zerotouch rpc DEVICE_ID reboot --oneway`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := cobra.RangeArgs(2, 3)(cmd, args); err != nil {
				return usageError(cmd, err)
			}
			return nil
		},
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
			var params json.RawMessage
			if len(args) == 3 {
				params = json.RawMessage(bytes.TrimSpace([]byte(args[2])))
				if !json.Valid(params) {
					return usageError(cmd, fmt.Errorf("PARAMS_JSON %q is not valid JSON (a string needs quotes: '\"on\"')", args[2]))
				}
			}
			if timeout < 0 {
				return usageError(cmd, errors.New("--timeout must be positive"))
			}
			res, err := c.RPC(ctx, args[0], args[1], params, apiclient.RPCOptions{Timeout: timeout, OneWay: oneWay})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if oneWay {
				if o.output == outputJSON {
					return o.print(cmd, api.RPCDelivered{Delivered: true}, nil)
				}
				cmd.PrintErrln("delivered (one-way: no answer awaited)")
				return nil
			}
			var buf bytes.Buffer
			if err := json.Indent(&buf, res, "", "  "); err != nil {
				buf.Reset()
				buf.Write(res)
			}
			_, err = fmt.Fprintf(out, "%s\n", buf.Bytes())
			return err
		}),
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "how long to wait for the answer (server default 10s, at most 10m)")
	cmd.Flags().BoolVar(&oneWay, "oneway", false, "do not wait for an answer")
	return cmd
}
