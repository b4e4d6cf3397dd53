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
	// No default from the environment here: --help prints defaults, and the
	// key must never appear on a terminal. key() reads the variable.
	f.StringVar(&o.apiKey, "api-key", "", "management API key (env ZEROTOUCH_API_KEY)")
	f.StringVarP(&o.output, "output", "o", "table", "output format: table or json")
}

// key is the API key from --api-key, else from ZEROTOUCH_API_KEY.
func (o *clientOptions) key() string {
	if o.apiKey != "" {
		return o.apiKey
	}
	return os.Getenv("ZEROTOUCH_API_KEY")
}

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}
