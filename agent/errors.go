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
	codeIsADirectory       = "IS_A_DIRECTORY"
	codeNotADirectory      = "NOT_A_DIRECTORY"
	codePermissionDenied   = "PERMISSION_DENIED"
	codeCwdNotFound        = "CWD_NOT_FOUND"
	codeConnectionRefused  = "CONNECTION_REFUSED"
	codeConnectFailed      = "CONNECT_FAILED"
	codeConnectionReset    = "CONNECTION_RESET"
	codeForkRefused        = "FORK_REFUSED"
	codeNotForkable        = "NOT_FORKABLE"
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
	// File ops act as the exec user (userfs_linux.go): these refusals are the caller's to fix,
	// each with a code of its own so a client can tell them from a failure of the sandbox.
	if errors.Is(err, fs.ErrPermission) {
		return &opError{Code: codePermissionDenied, Message: "the sandbox user may not do this: " + err.Error()}
	}
	if errors.Is(err, syscall.EROFS) {
		return &opError{Code: codePermissionDenied, Message: "this part of the sandbox is read-only (write under /workspace, /tmp or the home directory): " + err.Error()}
	}
	if errors.Is(err, syscall.EISDIR) {
		return &opError{Code: codeIsADirectory, Message: "a directory is in the way: " + err.Error()}
	}
	if errors.Is(err, syscall.ENOTDIR) {
		return &opError{Code: codeNotADirectory, Message: "a file is in the way where a directory is needed: " + err.Error()}
	}
	if errors.Is(err, syscall.ENAMETOOLONG) || errors.Is(err, syscall.ELOOP) || errors.Is(err, syscall.EEXIST) {
		return &opError{Code: codeBadRequest, Message: err.Error()}
	}
	return &opError{Code: codeInternal, Message: err.Error()}
}
