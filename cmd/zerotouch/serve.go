package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/zerotouch/zerotouch/internal/config"
	"github.com/zerotouch/zerotouch/internal/server"
)

func newServeCmd() *cobra.Command {
	var (
		flags       config.Config
		configFile  string
		checkConfig bool
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the zerotouch server",
		Long: `Run the zerotouch server: provisioning, device hub and management API.

Settings come from, in increasing precedence: defaults, the YAML file given by
--config (or ZEROTOUCH_CONFIG), ZEROTOUCH_* environment variables, and flags.
Every listener can be switched off with "off". On first start an admin API key
is generated and printed once, unless ZEROTOUCH_ADMIN_KEY or --admin-key-file
gives one.`,
		Example: `  zerotouch serve
  zerotouch serve --data /var/lib/zerotouch --mqtt off
  ZEROTOUCH_HTTP=127.0.0.1:9000 zerotouch serve --check-config`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := config.Defaults()
			if configFile == "" {
				configFile = os.Getenv("ZEROTOUCH_CONFIG")
			}
			if configFile != "" {
				if err := cfg.LoadFile(configFile); err != nil {
					return &exitError{code: exitUsage, err: err}
				}
			}
			cfg.LoadEnv(os.LookupEnv)
			for _, s := range config.Settings() {
				if cmd.Flags().Changed(s.Name) {
					*s.Field(&cfg) = *s.Field(&flags)
				}
			}
			if err := cfg.Finish(); err != nil {
				return &exitError{code: exitUsage, err: fmt.Errorf("invalid configuration:\n%w", err)}
			}
			if checkConfig {
				fmt.Fprint(cmd.OutOrStdout(), cfg.Redacted())
				return nil
			}
			return serve(cmd.Context(), cfg, cmd)
		},
	}
	f := cmd.Flags()
	def := config.Defaults()
	for _, s := range config.Settings() {
		f.StringVar(s.Field(&flags), s.Name, *s.Field(&def), s.Usage+" (env "+s.Env()+")")
	}
	f.StringVar(&configFile, "config", "", "YAML configuration file (env ZEROTOUCH_CONFIG)")
	f.BoolVar(&checkConfig, "check-config", false, "validate the configuration, print it (secrets hidden) and exit")
	return cmd
}

func serve(ctx context.Context, cfg config.Config, cmd *cobra.Command) error {
	level, _ := config.ParseLevel(cfg.LogLevel)
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(cmd.ErrOrStderr(), opts)
	if cfg.LogFormat == "json" {
		h = slog.NewJSONHandler(cmd.ErrOrStderr(), opts)
	}
	log := slog.New(h)
	srv, err := server.Start(ctx, cfg, server.Options{Logger: log, Banner: cmd.OutOrStdout()})
	if err != nil {
		return err
	}
	werr := srv.Wait(ctx)
	log.Info("shutting down")
	shutdown, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := srv.Close(shutdown); err != nil {
		log.Error("shutdown", "error", err)
	}
	return werr
}
