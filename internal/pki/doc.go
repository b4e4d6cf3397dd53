// Package pki is zerotouch's built-in certificate authority: it creates
// (or imports) the CA, issues device and server certificates, checks the
// certificate requests devices send, builds CRLs, and parses the
// certificates, requests and fingerprints that arrive from the network.
//
// # The CA on disk
//
// Open creates the CA on first start and loads it afterwards. Its directory
// (0700) holds:
//
//	root.crt     the self-signed root (PEM)
//	root.key     the root's private key, sealed
//	issuing.crt  the issuing (intermediate) CA, signed by the root, then any
//	             CA certificates between it and the root (PEM)
//	issuing.key  the issuing CA's private key, sealed
//	kek          the key-encryption key, when no passphrase is used
//	crlnumber    the last CRL number handed out
//
// Two levels, so that the root key is used once, at creation, and never
// needs to be decrypted again: devices and relying parties trust the root,
// and a compromised or expiring issuing CA can be replaced under it. An
// imported CA has no root.key; its root.crt exists only when the imported
// chain ends in a self-signed certificate.
//
// A new CA's files are written with a ".creating" marker in the directory,
// removed once every file is written and synced: a start that finds the
// marker knows the creation was interrupted and starts it over, so an
// interrupted first start leaves no half-made CA. Files are replaced by
// writing a temporary file, syncing it and renaming it; private files are
// 0600.
//
// # Sealed keys
//
// A private key is stored as PKCS#8 DER sealed with AES-256-GCM under a
// key-encryption key (KEK), in a PEM block of type
// "ZEROTOUCH ENCRYPTED PRIVATE KEY" whose headers say how to unseal it
// (KEK kind, KDF and its parameters, nonce, purpose) and are authenticated
// with the ciphertext. The KEK is either:
//
//   - a random 32-byte key kept hex-encoded in a file (Options.KeyFile,
//     default <dir>/kek, created 0600 on first start): the CA starts
//     unattended, and a copy of the sealed keys alone reveals nothing; or
//   - derived from an operator's passphrase (Options.Passphrase) with
//     PBKDF2-HMAC-SHA256, salt and iteration count in the header: nothing
//     on disk unseals the keys without the operator.
//
// A header also carries a short check value of the KEK, so that a wrong
// passphrase or key file (ErrWrongKEK) is told apart from a damaged file
// (ErrCorrupt). No function returns or logs a CA private key; the only way
// a key crosses the package boundary is inwards, through Import.
//
// # Issuing
//
// SignCSR is the preferred path: the device keeps its private key and sends
// a certificate request, which is checked (ParseCSR: encoding, key type and
// size, signature, no CA request) and then compared with the Profile the
// caller built for the device: the request may omit names, but may not ask
// for a common name or subject alternative name the profile does not give.
// The certificate carries the profile's names, never the request's, and
// nothing else from the request. IssueWithNewKey generates the key pair
// server-side for flows that need it; the key is returned once, in PEM, and
// kept nowhere. IssueServerCertificate issues the TLS listeners' own
// certificate.
//
// Serial numbers are 16 random bytes with the top bit cleared and the next
// one set: positive, always 16 bytes in DER (no leading zero to confuse
// encoders), 126 bits of entropy. The package keeps no record of what it
// issued: the caller records every Issued in the registry
// (registry.Store.RecordCertificates, or ProvisionCommit.Certificates), whose
// uniqueness rule on serials is the final guard; on a serial conflict the
// caller signs again:
//
//	for attempt := 0; ; attempt++ {
//		iss, err := ca.SignCSR(csr, profile)
//		if err != nil {
//			return err // ErrBadCSR: tell the device why
//		}
//		err = store.RecordCertificates(ctx, []registry.Certificate{{
//			Serial: iss.Serial, OrgID: org, DeviceID: dev.ID, Issuer: iss.IssuerID,
//			Fingerprint: iss.Fingerprint, CommonName: iss.Certificate.Subject.CommonName,
//			NotBefore: iss.Certificate.NotBefore, NotAfter: iss.Certificate.NotAfter,
//			PEM: string(iss.PEM()),
//		}})
//		if !errors.Is(err, registry.ErrConflict) || attempt == 2 {
//			return err
//		}
//	}
//
// # Revocation
//
// The registry keeps which certificates are revoked; CA.CRL turns that list
// into a CRL signed by the issuing CA, with a CRL number that only grows
// (persisted in crlnumber) and a nextUpdate; the caller regenerates it when
// the list changes and well before nextUpdate.
//
// # Untrusted input
//
// ParseCSR, ParseCertificates, ParseCertificate, ParseFingerprint and
// ParseSerial take bytes from devices and operators: they bound the input's
// size, refuse anything that is not what they expect with an error that
// says why, and never panic (each has a fuzz test).
package pki
