package apiclient

import (
	"context"
	"net/http"

	"github.com/zerotouch/zerotouch/internal/api"
)

// SendMessage sends a cloud-to-device message to an Azure IoT device and
// returns its message id; a device that is not connected is an *Error
// with code device-offline (nothing is queued).
func (c *Client) SendMessage(ctx context.Context, deviceID string, m api.MessageRequest) (string, error) {
	var out api.MessageSent
	err := c.do(ctx, request{method: http.MethodPost, path: pathOf("/api/devices/%s/messages", deviceID), in: m}, &out)
	return out.MessageID, err
}
