package main

import (
	"os"

	"github.com/spf13/cobra"
)

// clientOptions are the persistent flags of every command that talks to the
// management API.
type clientOptions struct {
	server string
	apiKey string
	output string
}

func (o *clientOptions) register(root *cobra.Command) {
	f := root.PersistentFlags()
	f.StringVar(&o.server, "server", envOr("ZEROTOUCH_SERVER", "http://127.0.0.1:8080"), "management API base URL (env ZEROTOUCH_SERVER)")
	f.StringVar(&o.apiKey, "api-key", os.Getenv("ZEROTOUCH_API_KEY"), "management API key (env ZEROTOUCH_API_KEY)")
	f.StringVarP(&o.output, "output", "o", "table", "output format: table or json")
}

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}
