package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/zerotouch/zerotouch/internal/api"
	"github.com/zerotouch/zerotouch/internal/apiclient"
)

func newMessageCmd(o *clientOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "message",
		Short: "Cloud-to-device messages for Azure IoT devices",
	}
	var (
		props     []string
		messageID string
		asJSON    bool
	)
	send := &cobra.Command{
		Use:   "send DEVICE_ID PAYLOAD",
		Short: "Send a cloud-to-device message to a connected Azure IoT device",
		Long: `Send a cloud-to-device message to a device that speaks Azure IoT Hub's
protocol and is connected now: it arrives on devices/{id}/messages/devicebound/
with its properties. PAYLOAD is sent as text, or with --json as a JSON value.
Nothing is queued: if the device is not connected the command fails and nothing
is sent. The message id is printed on stdout.`,
		Example: `  zerotouch message send DEVICE_ID 'stop the line' --property priority=high
  zerotouch message send DEVICE_ID '{"setpoint": 21.5}' --json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := cobra.ExactArgs(2)(cmd, args); err != nil {
				return usageError(cmd, err)
			}
			return nil
		},
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
			req := api.MessageRequest{MessageID: messageID}
			if asJSON {
				if !json.Valid([]byte(args[1])) {
					return usageError(cmd, fmt.Errorf("PAYLOAD %q is not valid JSON (drop --json to send it as text)", args[1]))
				}
				req.Payload = json.RawMessage(args[1])
			} else {
				req.Payload, _ = json.Marshal(args[1])
			}
			for _, p := range props {
				k, v, ok := strings.Cut(p, "=")
				if !ok || k == "" {
					return usageError(cmd, fmt.Errorf("--property %q: want name=value", p))
				}
				if req.Properties == nil {
					req.Properties = map[string]string{}
				}
				req.Properties[k] = v
			}
			id, err := c.SendMessage(ctx, args[0], req)
			if err != nil {
				return err
			}
			if o.output == outputJSON {
				return o.print(cmd, api.MessageSent{MessageID: id, Delivered: true}, nil)
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), id)
			return err
		}),
	}
	send.Flags().StringArrayVar(&props, "property", nil, "application property name=value (repeatable)")
	send.Flags().StringVar(&messageID, "message-id", "", "message id (generated when empty)")
	send.Flags().BoolVar(&asJSON, "json", false, "PAYLOAD is a JSON value, sent as JSON")
	cmd.AddCommand(send)
	return cmd
}
