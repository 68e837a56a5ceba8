package main

// Error catalogue of the protocol: every op error leaves the agent as one of these codes.

import (
	"errors"
	"fmt"
	"io/fs"
	"syscall"
)

const (
	codeBadRequest         = "BAD_REQUEST"
	codeHandshakeRequired  = "HANDSHAKE_REQUIRED"
	codeUnsupportedVersion = "UNSUPPORTED_VERSION"
	codeExecFailed         = "EXEC_FAILED"
	codeNotFound           = "NOT_FOUND"
	codePathEscape         = "PATH_ESCAPE"
	codeTooLarge           = "TOO_LARGE"
	codeCancelled          = "CANCELLED"
	codeInternal           = "INTERNAL"
)

// opError is an error with a protocol code; anything else becomes INTERNAL (or NOT_FOUND).
type opError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *opError) Error() string { return e.Code + ": " + e.Message }

func newOpError(code, format string, args ...any) *opError {
	return &opError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// toOpError translates a foreign error exactly once, at the edge of an op.
func toOpError(err error) *opError {
	var oe *opError
	if errors.As(err, &oe) {
		return oe
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return &opError{Code: codeTooLarge, Message: "the sandbox disk is full: " + err.Error()}
	}
	if errors.Is(err, fs.ErrNotExist) {
		return &opError{Code: codeNotFound, Message: err.Error()}
	}
	if errors.Is(err, fs.ErrPermission) {
		// File ops act as the exec user (userfs_linux.go): their refusal is the caller's to fix.
		return &opError{Code: codeBadRequest, Message: "the sandbox user may not do this: " + err.Error()}
	}
	return &opError{Code: codeInternal, Message: err.Error()}
}
