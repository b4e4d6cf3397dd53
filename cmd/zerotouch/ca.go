package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"

	"github.com/zerotouch/zerotouch/internal/api"
	"github.com/zerotouch/zerotouch/internal/apiclient"
	"github.com/zerotouch/zerotouch/internal/config"
	"github.com/zerotouch/zerotouch/internal/pki"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/server"
)

func newCACmd(o *clientOptions) *cobra.Command {
	return newGroupCmd("ca", "The built-in certificate authority: show it, export its chain and CRL, import an existing CA",
		newCAShowCmd(o),
		newCAExportCmd(o),
		newCACRLCmd(o),
		newCAImportCmd(o),
	)
}

func newCAShowCmd(o *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "show",
		Short: "Show the built-in CA: issuing and root certificates, where devices fetch the chain and CRL",
		Long: "Show the built-in CA's issuing (intermediate) and root certificates, and the public URLs of its\n" +
			"chain and CRL. Its keys are never shown. -o json includes the chain in PEM.",
		Example: "  zerotouch ca show\n  zerotouch ca show -o json | jq -r .chainPem",
		Args:    exactArgs(0),
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
			ca, err := c.GetCA(ctx)
			if err != nil {
				return err
			}
			return o.print(cmd, ca, func(w io.Writer) { caFields(w, ca, c.BaseURL()) })
		}),
	}
}

func caFields(w io.Writer, ca *api.CAInfo, base string) {
	fields(w,
		"Issuing CA", ca.Issuer.Subject,
		"Issuing serial", ca.Issuer.Serial,
		"Issuing fingerprint", ca.Issuer.Fingerprint,
		"Issuing valid from", fmtTime(ca.Issuer.NotBefore),
		"Issuing valid until", fmtTime(ca.Issuer.NotAfter),
	)
	if ca.Root.Subject == "" {
		fields(w, "Root CA", "- (imported without its root)")
	} else {
		fields(w,
			"Root CA", ca.Root.Subject,
			"Root serial", ca.Root.Serial,
			"Root fingerprint", ca.Root.Fingerprint,
			"Root valid until", fmtTime(ca.Root.NotAfter),
		)
	}
	fields(w,
		"Issuer id", ca.IssuerID,
		"Chain", base+ca.ChainPath,
		"CRL", base+ca.CRLPath+" (DER), "+base+ca.CRLPath+".pem",
	)
}

// chainExport is `ca export -o json`.
type chainExport struct {
	ChainPEM string `json:"chainPem"`
}

func newCAExportCmd(o *clientOptions) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Write the CA chain (PEM) that devices and relying parties trust",
		Long: "Write the CA chain in PEM, issuing CA first, then the root: what devices install to trust the\n" +
			"server's TLS listeners and what relying parties use to verify device certificates. It comes\n" +
			"from the public route /ca/chain.pem: no API key is needed. -o json wraps it in {\"chainPem\": ...}.",
		Example: "  zerotouch ca export --out ca.pem\n  zerotouch ca export > ca.pem",
		Args:    exactArgs(0),
		RunE: o.runPublic(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
			chain, err := c.CAChainPEM(ctx)
			if err != nil {
				return err
			}
			certs, err := parseChain(chain)
			if err != nil {
				return fmt.Errorf("the server's %s is not a CA chain: %w", apiclient.ChainPath, err)
			}
			data := chain
			if o.output == outputJSON {
				if data, err = jsonBytes(chainExport{ChainPEM: string(chain)}); err != nil {
					return err
				}
			}
			if err := writeOut(cmd, out, data, 0o644); err != nil {
				return err
			}
			if out != "" {
				subjects := make([]string, len(certs))
				for i, c := range certs {
					subjects[i] = c.Subject.String()
				}
				cmd.PrintErrf("wrote the CA chain to %s: %s\n", out, strings.Join(subjects, " <- "))
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&out, "out", "", "write to this file instead of stdout")
	return cmd
}

// parseChain parses a PEM chain of certificates, refusing anything else.
func parseChain(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			if len(bytes.TrimSpace(rest)) > 0 {
				return nil, errors.New("text that is not PEM")
			}
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("a PEM block of type %q", blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no certificate")
	}
	return certs, nil
}

// crlInfo is `ca crl --text` and `ca crl -o json`.
type crlInfo struct {
	Issuer     string     `json:"issuer"`
	Number     string     `json:"number"`
	ThisUpdate time.Time  `json:"thisUpdate"`
	NextUpdate time.Time  `json:"nextUpdate"`
	Entries    []crlEntry `json:"entries"`
	PEM        string     `json:"crlPem"`
}

type crlEntry struct {
	Serial    string    `json:"serial"`
	RevokedAt time.Time `json:"revokedAt"`
	// Reason is the RFC 5280 name of the entry's reason code.
	Reason string `json:"reason"`
}

// reasonNames are the CRLReason names of RFC 5280 section 5.3.1, by code.
var reasonNames = map[int]string{
	0: string(registry.RevocationUnspecified), 1: string(registry.RevocationKeyCompromise),
	2: string(registry.RevocationCACompromise), 3: string(registry.RevocationAffiliationChanged),
	4: string(registry.RevocationSuperseded), 5: string(registry.RevocationCessationOfOperation),
	6: "certificateHold", 8: "removeFromCRL", 9: string(registry.RevocationPrivilegeWithdrawn), 10: "aACompromise",
}

func reasonName(code int) string {
	if n, ok := reasonNames[code]; ok {
		return n
	}
	return fmt.Sprintf("code %d", code)
}

func newCACRLCmd(o *clientOptions) *cobra.Command {
	var (
		out       string
		der, text bool
	)
	cmd := &cobra.Command{
		Use:   "crl",
		Short: "Write the CA's certificate revocation list (PEM, DER, or its entries as text or JSON)",
		Long: "Write the built-in CA's current CRL, fetched from the public route /ca/crl (no API key needed)\n" +
			"and checked against the CA chain: PEM by default, DER with --der. --text prints its entries\n" +
			"instead (serial, revocation time, reason); -o json prints them as JSON, with the PEM.\n" +
			"The server rebuilds the CRL on every revocation and daily.",
		Example: "  zerotouch ca crl --text\n  zerotouch ca crl --der --out crl.der\n  zerotouch ca crl -o json | jq '.entries[].serial'",
		Args:    exactArgs(0),
		RunE: o.runPublic(func(ctx context.Context, cmd *cobra.Command, args []string, c *apiclient.Client) error {
			switch {
			case der && text:
				return usageError(cmd, errors.New("--der and --text exclude each other"))
			case der && o.output == outputJSON:
				return usageError(cmd, errors.New("--der and -o json exclude each other"))
			case der && out == "" && isTerminal(cmd.OutOrStdout()):
				return usageError(cmd, errors.New("DER is binary: give --out FILE or redirect stdout"))
			}
			crlDER, err := c.CRL(ctx)
			if err != nil {
				return err
			}
			crl, err := x509.ParseRevocationList(crlDER)
			if err != nil {
				return fmt.Errorf("the server's %s is not a CRL: %w", apiclient.CRLPath, err)
			}
			chain, err := c.CAChainPEM(ctx)
			if err != nil {
				return err
			}
			if err := checkCRL(crl, chain); err != nil {
				return err
			}
			crlPEM := pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: crlDER})
			switch {
			case der:
				return writeOut(cmd, out, crlDER, 0o644)
			case !text && o.output == outputTable:
				return writeOut(cmd, out, crlPEM, 0o644)
			}
			info := describeCRL(crl, crlPEM)
			if o.output == outputJSON {
				b, err := jsonBytes(info)
				if err != nil {
					return err
				}
				return writeOut(cmd, out, b, 0o644)
			}
			var buf bytes.Buffer
			if err := printTable(&buf, func(w io.Writer) { crlTable(w, info) }); err != nil {
				return err
			}
			return writeOut(cmd, out, buf.Bytes(), 0o644)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "", "write to this file instead of stdout")
	f.BoolVar(&der, "der", false, "write the CRL in DER (binary), as served at /ca/crl")
	f.BoolVar(&text, "text", false, "print the CRL's entries: serial, revocation time, reason")
	return cmd
}

// checkCRL verifies that the CRL was signed by a CA of the chain.
func checkCRL(crl *x509.RevocationList, chainPEM []byte) error {
	chain, err := parseChain(chainPEM)
	if err != nil {
		return fmt.Errorf("the server's %s is not a CA chain: %w", apiclient.ChainPath, err)
	}
	for _, ca := range chain {
		if bytes.Equal(ca.RawSubject, crl.RawIssuer) && crl.CheckSignatureFrom(ca) == nil {
			return nil
		}
	}
	return fmt.Errorf("the CRL's signature (issuer %s) does not verify with the server's CA chain: do not distribute it", crl.Issuer)
}

func describeCRL(crl *x509.RevocationList, crlPEM []byte) crlInfo {
	info := crlInfo{
		Issuer: crl.Issuer.String(), ThisUpdate: crl.ThisUpdate.UTC(), NextUpdate: crl.NextUpdate.UTC(),
		Entries: []crlEntry{}, PEM: string(crlPEM),
	}
	if crl.Number != nil {
		info.Number = crl.Number.String()
	}
	for _, e := range crl.RevokedCertificateEntries {
		info.Entries = append(info.Entries, crlEntry{Serial: pki.SerialHex(e.SerialNumber), RevokedAt: e.RevocationTime.UTC(), Reason: reasonName(e.ReasonCode)})
	}
	return info
}

func crlTable(w io.Writer, info crlInfo) {
	fields(w,
		"Issuer", info.Issuer,
		"CRL number", info.Number,
		"This update", fmtTime(info.ThisUpdate),
		"Next update", fmtTime(info.NextUpdate),
		"Entries", fmt.Sprint(len(info.Entries)),
	)
	if len(info.Entries) > 0 {
		fmt.Fprintln(w)
		row(w, "SERIAL", "REVOKED", "REASON")
		for _, e := range info.Entries {
			row(w, e.Serial, fmtTime(e.RevokedAt), e.Reason)
		}
	}
}

// importedCA is what `ca import` prints.
type importedCA struct {
	Directory   string    `json:"directory"`
	Subject     string    `json:"subject"`
	Fingerprint string    `json:"fingerprint"`
	NotAfter    time.Time `json:"notAfter"`
	// Root is the self-signed root the chain ended in; empty without one.
	Root     string `json:"root,omitempty"`
	IssuerID string `json:"issuerId"`
	// SealedWith is "passphrase" or the key file's path.
	SealedWith string `json:"sealedWith"`
}

func newCAImportCmd(o *clientOptions) *cobra.Command {
	var (
		certFile, keyFile, configFile string
		flags                         config.Config
	)
	cmd := &cobra.Command{
		Use:   "import --cert FILE --key FILE",
		Short: "Make an existing CA the built-in CA (offline, in the data directory; then start the server)",
		Long: `Import an existing CA certificate and its private key into the data directory, as the CA the
server issues device certificates from. This works offline, on the data directory itself: run it
before the server's first start (which would otherwise create a CA) with the server stopped, then
start the server. A data directory that already holds a CA is refused.

--cert holds the CA certificate (PEM), optionally followed by the chain above it up to a root; it
must be allowed to sign certificates and CRLs and be valid now. --key holds its unencrypted private
key (PKCS#8, PKCS#1 or SEC1 PEM). The key is sealed, like a created CA's, under the passphrase of
--ca-passphrase-file or ZEROTOUCH_CA_PASSPHRASE (the server then needs the same one at every
start), or else under a new key file in the CA directory. It is never printed; keep the original
file offline, or destroy it.

--data, --ca-passphrase-file and --config are read as "zerotouch serve" reads them.`,
		Example: "  zerotouch ca import --cert issuing.pem --key issuing.key --data /var/lib/zerotouch\n" +
			"  ZEROTOUCH_CA_PASSPHRASE_FILE=/etc/zerotouch/ca-pass zerotouch ca import --cert ca.pem --key ca.key",
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.checkOutput(cmd); err != nil {
				return err
			}
			if certFile == "" || keyFile == "" {
				return usageError(cmd, errors.New("--cert and --key are required"))
			}
			cfg := config.Defaults()
			if configFile == "" {
				configFile = os.Getenv("ZEROTOUCH_CONFIG")
			}
			if configFile != "" {
				if err := cfg.LoadFile(configFile); err != nil {
					return usageError(cmd, err)
				}
			}
			cfg.LoadEnv(os.LookupEnv)
			for _, name := range []string{"data", "ca-passphrase-file"} {
				if cmd.Flags().Changed(name) {
					s := settingNamed(name)
					*s.Field(&cfg) = *s.Field(&flags)
				}
			}
			if cfg.DataDir == "" {
				return usageError(cmd, errors.New("--data must not be empty"))
			}
			// As serve reads it: ZEROTOUCH_CA_PASSPHRASE wins over a file.
			// A file given on this command line as well is ambiguous.
			if len(cfg.CAPassphrase) > 0 && cmd.Flags().Changed("ca-passphrase-file") {
				return usageError(cmd, errors.New("both ZEROTOUCH_CA_PASSPHRASE and --ca-passphrase-file are set: give one (zerotouch serve would use ZEROTOUCH_CA_PASSPHRASE)"))
			}
			if len(cfg.CAPassphrase) == 0 && cfg.CAPassphraseFile != "" {
				p, err := pki.ReadPassphraseFile(cfg.CAPassphraseFile)
				if err != nil {
					return err
				}
				cfg.CAPassphrase = p
			}
			return importCA(cmd, o, cfg, certFile, keyFile)
		},
	}
	f := cmd.Flags()
	f.StringVar(&certFile, "cert", "", "the CA certificate, then optionally its chain up to a root (PEM, required)")
	f.StringVar(&keyFile, "key", "", "the CA's unencrypted private key (PEM, required)")
	def := config.Defaults()
	for _, name := range []string{"data", "ca-passphrase-file"} {
		s := settingNamed(name)
		f.StringVar(s.Field(&flags), name, *s.Field(&def), s.Usage+" (env "+s.Env()+")")
	}
	f.StringVar(&configFile, "config", "", "the server's YAML configuration file, for its data directory and passphrase file (env ZEROTOUCH_CONFIG)")
	return cmd
}

// settingNamed is the server setting of that flag name.
func settingNamed(name string) config.Setting {
	for _, s := range config.Settings() {
		if s.Name == name {
			return s
		}
	}
	panic("no setting " + name)
}

func importCA(cmd *cobra.Command, o *clientOptions, cfg config.Config, certFile, keyFile string) error {
	certPEM, err := readLimited(certFile, pki.MaxInputSize)
	if err != nil {
		return fmt.Errorf("--cert: %w", err)
	}
	keyPEM, err := readLimited(keyFile, pki.MaxInputSize)
	if err != nil {
		return fmt.Errorf("--key: %w", err)
	}
	// pki.Import takes a CA that may not sign CRLs (with a warning), but
	// the server cannot then publish its CRL and refuses to start: say so
	// now, before the data directory holds it.
	if chain, err := pki.ParseCertificates(certPEM); err == nil && chain[0].KeyUsage&x509.KeyUsageCRLSign == 0 {
		return fmt.Errorf("%s may not sign CRLs (its key usage lacks cRLSign): zerotouch serve could not publish its CRL "+
			"and would refuse to start with it; import a CA whose certificate allows cRLSign. Nothing was imported", chain[0].Subject)
	}
	db := filepath.Join(cfg.DataDir, server.DatabaseFile)
	for _, path := range []string{db, db + "-shm"} {
		pid, err := lockHolder(path)
		if err != nil {
			return fmt.Errorf("check whether a server uses %s: %w", cfg.DataDir, err)
		}
		if pid != 0 {
			return fmt.Errorf("zerotouch serve seems to be running on %s (process %d holds its database open): "+
				"stop it, import, then start it again; a running server keeps the CA it loaded at start", cfg.DataDir, pid)
		}
	}
	dir := filepath.Join(cfg.DataDir, server.CADir)
	// pki warns here, e.g. of a CA that may not sign CRLs; its info lines
	// repeat what this command prints.
	log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{
		Level: slog.LevelWarn,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{}
			}
			return a
		},
	}))
	ca, err := pki.Import(cmd.Context(), dir, certPEM, keyPEM, pki.Options{Passphrase: cfg.CAPassphrase, Logger: log})
	if errors.Is(err, pki.ErrExists) {
		return fmt.Errorf("%s already holds a CA (the server creates one at its first start); nothing was imported. "+
			"To replace it: stop the server, move %s away (the certificates it issued stop verifying), import again, start the server", dir, dir)
	}
	if err != nil {
		return err
	}
	iss := ca.Issuer()
	res := importedCA{
		Directory: dir, Subject: iss.Subject.String(), Fingerprint: pki.Fingerprint(iss.Raw),
		NotAfter: iss.NotAfter.UTC(), IssuerID: ca.IssuerID(), SealedWith: filepath.Join(dir, "kek"),
	}
	if r := ca.Root(); r != nil {
		res.Root = r.Subject.String()
	}
	if len(cfg.CAPassphrase) > 0 {
		res.SealedWith = "passphrase"
	}
	if err := o.print(cmd, res, func(w io.Writer) {
		fields(w,
			"Imported CA", res.Subject,
			"Fingerprint", res.Fingerprint,
			"Valid until", fmtTime(res.NotAfter),
			"Root CA", orDash(res.Root),
			"Issuer id", res.IssuerID,
			"Directory", res.Directory,
			"Key sealed with", res.SealedWith,
		)
	}); err != nil {
		return err
	}
	cmd.PrintErrf("imported; start zerotouch serve on %s to use it (a server already running must be restarted)\n", cfg.DataDir)
	if len(cfg.CAPassphrase) > 0 {
		cmd.PrintErrln("the server needs the same passphrase at every start (--ca-passphrase-file or ZEROTOUCH_CA_PASSPHRASE)")
	}
	cmd.PrintErrf("the key is now sealed in %s: keep %s offline, or destroy it\n", dir, keyFile)
	return nil
}

// readLimited reads a file of at most limit bytes.
func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d KiB: not a certificate, key or request", path, limit>>10)
	}
	return b, nil
}

// writeOut writes data to the file path (replacing it whole, with perm),
// or to stdout when path is empty or "-".
func writeOut(cmd *cobra.Command, path string, data []byte, perm os.FileMode) error {
	if path == "" || path == "-" {
		_, err := cmd.OutOrStdout().Write(data)
		return err
	}
	return writeFileAtomic(path, data, perm)
}

// writeFileAtomic replaces path with data: a temporary file in the same
// directory is written, synced and renamed over path.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// jsonBytes is v as -o json prints it.
func jsonBytes(v any) ([]byte, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding output: %w", err)
	}
	return append(b, '\n'), nil
}

// printTable renders a table as o.print does, into w.
func printTable(w io.Writer, table func(io.Writer)) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}
