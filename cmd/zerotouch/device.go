package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"

	"github.com/zerotouch/zerotouch/internal/api"
	"github.com/zerotouch/zerotouch/internal/apiclient"
	"github.com/zerotouch/zerotouch/internal/registry"
)

func newDeviceCmd(o *clientOptions) *cobra.Command {
	byID := func(use, short string, fn func(ctx context.Context, c *apiclient.Client, id string) (*registry.Device, error)) *cobra.Command {
		return &cobra.Command{
			Use:   use + " ID",
			Short: short,
			Args:  exactArgs(1),
			RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
				d, err := fn(ctx, c, args[0])
				if err != nil {
					return err
				}
				return o.print(cmd, d, func(w io.Writer) { deviceFields(w, d) })
			}),
		}
	}
	return newGroupCmd("device", "Manage devices: list, pre-provision, import, enable and disable, connection state",
		newDeviceListCmd(o),
		byID("get", "Show a device", func(ctx context.Context, c *apiclient.Client, id string) (*registry.Device, error) {
			return c.GetDevice(ctx, id)
		}),
		newDeviceCreateCmd(o),
		newDeviceImportCmd(o),
		byID("enable", "Enable a device: it may provision and connect", func(ctx context.Context, c *apiclient.Client, id string) (*registry.Device, error) {
			return c.SetDeviceEnabled(ctx, id, true)
		}),
		byID("disable", "Disable a device: it is refused and its sessions are closed", func(ctx context.Context, c *apiclient.Client, id string) (*registry.Device, error) {
			return c.SetDeviceEnabled(ctx, id, false)
		}),
		o.deleteCmd("device", "Delete a device and its credentials", (*apiclient.Client).DeleteDevice),
		&cobra.Command{
			Use:   "credentials ID",
			Short: "List a device's credentials, active and revoked",
			Args:  exactArgs(1),
			RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
				cs, err := c.ListCredentials(ctx, args[0])
				if err != nil {
					return err
				}
				return o.print(cmd, api.List[registry.Credential]{Items: cs}, func(w io.Writer) {
					row(w, "ID", "TYPE", "STATUS", "IDENTITY", "CREATED", "REVOKED")
					for _, c := range cs {
						row(w, c.ID, string(c.Type), string(c.Status), orDash(credentialIdentity(&c)), fmtTime(c.CreatedAt), orDash(fmtTimePtr(c.RevokedAt)))
					}
				})
			}),
		},
		newDeviceStateCmd(o),
		newDeviceRunCmd(),
	)
}

func newDeviceStateCmd(o *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "state ID",
		Short: "Show whether a device is connected, and when it last connected, disconnected and sent data",
		Long: "Show a device's connection state. Connected and Sessions are its live sessions on the node\n" +
			"that answers; the times are kept across restarts.",
		Example: "  zerotouch device state 6d199857-be94-4317-aef7-62ce9aa9f530",
		Args:    exactArgs(1),
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
			st, err := c.DeviceState(ctx, args[0])
			if err != nil {
				return err
			}
			never := func(t *time.Time) string { return cmp.Or(fmtTimePtr(t), "never") }
			connected := "no"
			if st.Connected {
				connected = "yes"
			}
			return o.print(cmd, st, func(w io.Writer) {
				fields(w,
					"Connected", connected,
					"Sessions", strconv.Itoa(st.Sessions),
					"Last connect", never(st.LastConnect),
					"Last disconnect", never(st.LastDisconnect),
					"Last activity", never(st.LastActivity),
				)
			})
		}),
	}
}

func newCredentialCmd(o *clientOptions) *cobra.Command {
	return newGroupCmd("credential", "Manage device credentials",
		&cobra.Command{
			Use:   "revoke ID",
			Short: "Revoke a credential; sessions using it are closed",
			Args:  exactArgs(1),
			RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
				cr, err := c.RevokeCredential(ctx, args[0])
				if err != nil {
					return err
				}
				return o.print(cmd, cr, func(w io.Writer) { credentialFields(w, cr, "", "") })
			}),
		},
	)
}

func newDeviceListCmd(o *clientOptions) *cobra.Command {
	var (
		f           apiclient.DeviceFilter
		profile     string
		status      string
		provisioned bool
		all         bool
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List devices",
		Args:  exactArgs(0),
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
			if profile != "" {
				f.ProfileID, f.ProfileName = profileRef(profile)
			}
			f.Status = registry.DeviceStatus(status)
			if cmd.Flags().Changed("provisioned") {
				f.Provisioned = &provisioned
			}
			page, err := collect(all, f.After, func(after string) (*api.List[registry.Device], error) {
				f.After = after
				return c.ListDevices(ctx, f)
			})
			if err != nil {
				return err
			}
			return printList(o, cmd, page, "after", func(w io.Writer) {
				row(w, "ID", "NAME", "STATUS", "PROFILE", "PROVISIONED")
				for _, d := range page.Items {
					row(w, d.ID, d.Name, string(d.Status), d.ProfileID, orDash(fmtTimePtr(d.ProvisionedAt)))
				}
			})
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&profile, "profile", "", "only devices of this profile (name or id)")
	fl.StringVar(&status, "status", "", "only enabled or disabled devices")
	fl.BoolVar(&provisioned, "provisioned", false, "only provisioned devices (--provisioned=false: only pre-provisioned ones not yet provisioned)")
	fl.StringVar(&f.NamePrefix, "prefix", "", "only devices whose name starts with this")
	pageFlags(cmd, &f.Limit, &f.After, &all)
	return cmd
}

func newDeviceCreateCmd(o *clientOptions) *cobra.Command {
	var (
		req      api.CreateDeviceRequest
		cred     api.CredentialsInput
		profile  string
		attrs    []string
		disabled bool
		certFile string
	)
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a pre-provisioned device",
		Long: "Create a device ahead of its first provisioning request (for a profile with the pre-provisioned\n" +
			"strategy). It normally receives its credentials when it provisions; credential flags issue them\n" +
			"now instead (generated when only --credentials-type is given), and they are printed only this once.",
		Example: "  zerotouch device create sensor-001 --profile sensors --attr mac=00:1b:63:84:45:e6 --attr location=hall3",
		Args:    exactArgs(1),
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
			if profile == "" {
				return usageError(cmd, errors.New("--profile is required"))
			}
			req.Name = args[0]
			req.ProfileID, req.ProfileName = profileRef(profile)
			if disabled {
				req.Status = registry.DeviceDisabled
			}
			for _, a := range attrs {
				k, v, ok := strings.Cut(a, "=")
				if !ok || k == "" {
					return usageError(cmd, fmt.Errorf("--attr %q: want KEY=VALUE", a))
				}
				if req.Attributes == nil {
					req.Attributes = map[string]any{}
				}
				req.Attributes[k] = v
			}
			if certFile != "" {
				b, err := os.ReadFile(certFile)
				if err != nil {
					return fmt.Errorf("reading the certificate: %w", err)
				}
				cred.Hash = string(b)
			}
			if cred != (api.CredentialsInput{}) {
				req.Credentials = &cred
			}
			d, err := c.CreateDevice(ctx, req)
			if err != nil {
				return err
			}
			if d.Credentials != nil && o.output == outputTable {
				cmd.PrintErrln("the credentials' secrets are shown only this once: keep them now")
			}
			return o.print(cmd, d, func(w io.Writer) {
				deviceFields(w, &d.Device)
				if ic := d.Credentials; ic != nil {
					credentialFields(w, &ic.Credential, ic.Token, ic.Password)
				}
			})
		}),
	}
	f := cmd.Flags()
	f.StringVar(&profile, "profile", "", "the device's profile, by name or id (required)")
	f.StringArrayVar(&attrs, "attr", nil, "attribute KEY=VALUE (repeatable)")
	f.BoolVar(&disabled, "disabled", false, "create it disabled (to be enabled later, e.g. by the OEM)")
	f.StringVar((*string)(&cred.CredentialsType), "credentials-type", "", "issue credentials now: ACCESS_TOKEN, MQTT_BASIC or X509_CERTIFICATE")
	f.StringVar(&cred.Token, "token", "", "ACCESS_TOKEN value")
	f.StringVar(&cred.ClientID, "client-id", "", "MQTT_BASIC client id")
	f.StringVar(&cred.Username, "username", "", "MQTT_BASIC user name")
	f.StringVar(&cred.Password, "password", "", "MQTT_BASIC password")
	f.StringVar(&certFile, "cert-file", "", "X509_CERTIFICATE: file holding the device's PEM certificate")
	return cmd
}

func newDeviceImportCmd(o *clientOptions) *cobra.Command {
	var (
		profile     string
		skipInvalid bool
	)
	cmd := &cobra.Command{
		Use:   "import FILE.csv",
		Short: "Create pre-provisioned devices in bulk from a CSV file",
		Long: `Create pre-provisioned devices in bulk from a CSV file, streamed to the server.

The first row names the columns: "name" is required; "credentialsType", "token",
"clientId", "username", "password" and "certificate" give optional credentials;
any other column (e.g. "mac", "location") becomes a device attribute.

Invalid rows are reported by line number. Without --skip-invalid any invalid row
refuses the whole file and nothing is imported; with it, the valid rows are.`,
		Example: "  zerotouch device import units.csv --profile sensors --skip-invalid",
		Args:    exactArgs(1),
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
			if profile == "" {
				return usageError(cmd, errors.New("--profile is required"))
			}
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			st, err := f.Stat()
			if err != nil {
				return err
			}
			opts := apiclient.ImportOptions{SkipInvalid: skipInvalid}
			opts.ProfileID, opts.ProfileName = profileRef(profile)
			pr := newProgress(f, st.Size(), cmd.ErrOrStderr(), args[0])
			res, err := c.ImportDevices(ctx, pr, st.Size(), opts)
			pr.done()
			return o.printImport(cmd, res, err)
		}),
	}
	cmd.Flags().StringVar(&profile, "profile", "", "the devices' profile, by name or id (required)")
	cmd.Flags().BoolVar(&skipInvalid, "skip-invalid", false, "import the valid rows and skip the invalid ones")
	return cmd
}

// printImport prints an import's outcome: the result on stdout, invalid
// rows that refused the import on stderr.
func (o *clientOptions) printImport(cmd *cobra.Command, res *api.ImportResult, err error) error {
	var ae *apiclient.Error
	refused := errors.As(err, &ae) && len(res.Errors) > 0
	if err != nil && !refused {
		return err
	}
	if refused {
		for _, e := range res.Errors {
			cmd.PrintErrf("line %d: %s\n", e.Line, e.Error)
		}
		if o.output == outputJSON {
			_ = o.print(cmd, res, nil)
		}
		return fmt.Errorf("import refused: %d invalid rows, nothing was imported (--skip-invalid imports the valid rows)", len(res.Errors))
	}
	return o.print(cmd, res, func(w io.Writer) {
		fmt.Fprintf(w, "created %d devices, skipped %d invalid rows\n", res.Created, len(res.Skipped))
		if len(res.Skipped) > 0 {
			row(w, "LINE", "ERROR")
			for _, e := range res.Skipped {
				row(w, strconv.Itoa(e.Line), e.Error)
			}
		}
	})
}

// progress counts the bytes of an upload. On a terminal it redraws a
// progress line at most every 100 ms; elsewhere it prints one summary line
// at the end.
type progress struct {
	r     io.Reader
	total int64
	label string
	start time.Time

	mu    sync.Mutex // the transport reads in its own goroutine
	w     io.Writer
	tty   bool
	sent  int64
	drawn time.Time
}

func newProgress(r io.Reader, total int64, w io.Writer, label string) *progress {
	f, ok := w.(*os.File)
	tty := ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
	return &progress{r: r, total: total, label: label, start: time.Now(), w: w, tty: tty}
}

func (p *progress) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sent += int64(n)
	if p.tty && time.Since(p.drawn) >= 100*time.Millisecond {
		p.drawn = time.Now()
		pct := 100.0
		if p.total > 0 {
			pct = 100 * float64(p.sent) / float64(p.total)
		}
		fmt.Fprintf(p.w, "\r%s: %s / %s (%.0f%%)  ", p.label, formatBytes(p.sent), formatBytes(p.total), pct)
	}
	return n, err
}

// done ends the progress line or prints the summary.
func (p *progress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		fmt.Fprint(p.w, "\r\033[K") // clear the progress line
	}
	fmt.Fprintf(p.w, "%s: sent %s of %s in %s\n", p.label, formatBytes(p.sent), formatBytes(p.total),
		time.Since(p.start).Round(time.Millisecond))
}

func deviceFields(w io.Writer, d *registry.Device) {
	fields(w,
		"ID", d.ID,
		"Name", d.Name,
		"Status", string(d.Status),
		"Profile", d.ProfileID,
		"Provisioned", orDash(fmtTimePtr(d.ProvisionedAt)),
		"Created", fmtTime(d.CreatedAt),
		"Updated", fmtTime(d.UpdatedAt),
	)
	for _, k := range slices.Sorted(maps.Keys(d.Attributes)) {
		fields(w, "Attribute "+k, fmt.Sprint(d.Attributes[k]))
	}
}

func credentialFields(w io.Writer, c *registry.Credential, token, password string) {
	fields(w,
		"Credential", c.ID,
		"Credentials type", string(c.Type),
		"Credential status", string(c.Status),
		"Token", token,
		"Client id", c.ClientID,
		"User name", c.Username,
		"Password", password,
		"Fingerprint", c.Fingerprint,
		"Revoked", fmtTimePtr(c.RevokedAt),
	)
}

// credentialIdentity is what identifies a credential without its secret.
func credentialIdentity(c *registry.Credential) string {
	switch c.Type {
	case registry.CredentialMQTTBasic:
		return fmt.Sprintf("clientId=%s userName=%s", c.ClientID, c.Username)
	case registry.CredentialX509:
		return c.Fingerprint
	}
	return ""
}
