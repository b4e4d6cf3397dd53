package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

// Kind is the class of a device's failure, the key of Report.Errors.
type Kind string

// Kinds of failure. A device fails with exactly one kind, the first that
// happened to it.
const (
	// KindConnect: the TCP connection could not be opened (refused,
	// unreachable, dial timeout), or the TLS handshake failed for want of
	// trust (certificate not verified, not a TLS server): a wrong
	// or dead server. A handshake that timed out or was cut off counts as
	// KindTimeout or KindClosed.
	KindConnect Kind = "connect"
	// KindRefused: the server answered and said no: a CONNACK return code
	// other than 0, or a subscription refused.
	KindRefused Kind = "refused"
	// KindProvision: the provisioning answer was not SUCCESS (wrong key or
	// secret, device refused by the profile's strategy…); for azure-dps,
	// a registration or poll answered other than 202 assigning / 200
	// assigned (401 unauthorized, status disabled or failed, 429…).
	KindProvision Kind = "provision-failed"
	// KindTimeout: the server did not answer within Config.Timeout.
	KindTimeout Kind = "timeout"
	// KindClosed: the server closed or reset the connection mid-exchange.
	KindClosed Kind = "closed"
	// KindProtocol: a malformed or unexpected packet or answer.
	KindProtocol Kind = "protocol"
	// KindLocal: the bench itself ran out of something (open files,
	// source ports).
	KindLocal Kind = "local"
	// KindCanceled: the run was interrupted before the device finished
	// (or started).
	KindCanceled Kind = "canceled"
)

// Error is a device's failure: its kind, the phase it happened in and the
// cause.
type Error struct {
	Kind  Kind
	Phase Phase
	Err   error
}

func (e *Error) Error() string {
	if e.Phase != "" {
		return string(e.Phase) + ": " + e.Err.Error()
	}
	return e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// classify turns err, met in phase, into an *Error. dialing says whether
// the connection was being opened, so that a failure there counts as
// KindConnect rather than as the server closing an established session.
func classify(err error, phase Phase, dialing bool) *Error {
	var be *Error
	if errors.As(err, &be) {
		if be.Phase == "" {
			be.Phase = phase
		}
		return be
	}
	kind := KindProtocol
	var ne net.Error
	var he *handshakeError
	var ve *tls.CertificateVerificationError
	var rh tls.RecordHeaderError
	if errors.As(err, &he) {
		if errors.As(err, &ve) || errors.As(err, &rh) {
			return &Error{Kind: KindConnect, Phase: phase, Err: err}
		}
		dialing = false // timed out or cut off: the server's doing
	}
	switch {
	case errors.Is(err, context.Canceled):
		kind = KindCanceled
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE), errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.ENOBUFS):
		kind = KindLocal
	case dialing:
		kind = KindConnect
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		kind = KindTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, net.ErrClosed):
		kind = KindClosed
	}
	return &Error{Kind: kind, Phase: phase, Err: err}
}
