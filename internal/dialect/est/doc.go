// Package est serves certificate renewal over EST, Enrollment over Secure
// Transport (RFC 7030, as clarified by RFC 8951), on the HTTPS listener, so
// that devices renew with off-the-shelf EST clients (libest, globalsign/est,
// a curl and openssl one-liner) and no zerotouch-specific code.
//
// # What is served
//
// Handler answers under PathPrefix, /.well-known/est/:
//
//   - GET cacerts: the CA certificates devices trust, the issuing CA then
//     the root, as a certs-only PKCS#7 (see pki.CertsOnlyPKCS7), base64,
//     with "Content-Type: application/pkcs7-mime; smime-type=certs-only".
//     No client certificate is needed (RFC 7030 section 4.1.1).
//   - POST simplereenroll: renewal. The device connects with the
//     certificate it renews as its TLS client certificate and posts a
//     PKCS#10 request ("Content-Type: application/pkcs10"); the answer is
//     the new certificate alone as a certs-only PKCS#7, base64. The new
//     certificate carries the names zerotouch gives the device, not the
//     request's: the request may leave its subject empty, and any name it
//     gives must be the device's (pki.CA.SignCSR). The device may keep its
//     key or send a request for a new one (re-key); generating a new key
//     at each renewal is recommended.
//   - GET csrattrs: 204 No Content, "no attributes required" in RFC 7030
//     section 4.5.2 terms.
//
// Not served, answered 404 with a sentence saying so: simpleenroll (a
// device gets its first certificate by provisioning, not by EST),
// serverkeygen (keys are made on the device), fullcmc, and CA labels
// (/.well-known/est/<label>/...): the server has one CA, and a label
// naming another must not silently get this one's certificates. A method
// other than the operation's gets 405.
//
// # Request body
//
// RFC 7030 says the body is base64 with "Content-Transfer-Encoding:
// base64"; RFC 8951 notes that HTTP has no such header and that the body is
// base64 regardless. The handler therefore ignores Content-Transfer-Encoding
// and reads:
//
//   - base64 (RFC 4648 standard alphabet, padding optional) of the DER
//     request, with any line breaks and blanks (base64 and openssl wrap
//     their output); or
//   - the DER request itself, as some clients send with
//     "Content-Transfer-Encoding: binary". It is recognised without
//     guessing: a request is a DER SEQUENCE longer than 127 bytes, so its
//     second byte has the high bit set, which no base64 text has.
//
// A PEM request is refused with a hint (strip the BEGIN/END lines, or send
// DER). The body is at most MaxRequestSize bytes (413 beyond).
//
// Responses carry "Content-Transfer-Encoding: base64" for RFC 7030 clients
// that look for it; the base64 is in lines of 64 characters ended by LF
// (not CRLF, which GNU base64 -d refuses), which every decoder reads
// (base64 -d, openssl base64 -d, Go's encoding/base64).
//
// # Authentication
//
// The HTTPS listener requests client certificates without verifying them
// (tls.RequestClientCert; certauth refuses unknown or revoked certificates
// of the built-in CA at the handshake). Handler only insists that one was
// presented (401 otherwise) and hands the leaf to the Renewer, which
// decides whether it may be renewed — issued by our CA, recorded, neither
// revoked nor expired — and issues the new certificate. The HTTP layer adds
// no authentication of its own (no HTTP Basic), and no proof of possession
// by tls-unique channel binding (RFC 7030 section 3.5, optional): the TLS
// handshake proves possession of the current key, the request's
// self-signature that of the new one.
//
// # Status codes
//
//	200  the certificate (or chain, for cacerts)
//	204  csrattrs: no attributes required
//	400  malformed request: not base64, not DER, not a valid PKCS#10
//	     request (pki.ErrBadCSR) or refused by the Renewer (ErrBadRequest)
//	401  no client certificate
//	403  the client certificate may not be renewed (ErrNotAuthorized)
//	404  not served (see above)
//	405  wrong method
//	413  body larger than MaxRequestSize
//	415  Content-Type is not application/pkcs10
//	503  renewal (or the CA) unavailable (ErrUnavailable, or no Renewer)
//	500  anything else
//
// Every error answer is text/plain: one sentence for the device, taken
// from the Renewer's error for 400, 403 and 503 (so those errors must say
// why and nothing internal) and fixed for 500, whose cause goes to the log
// only. Refusals are logged at info, failures at error.
package est
