package main

// sync: after a snapshot restore every clone would share the RNG state and a stale clock, so
// the host sends fresh entropy and the time before any user code runs.

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

const (
	ioctlRndAddEntropy = 0x40085203 // _IOW('R', 0x03, int[2])
	ioctlRndReseedCrng = 0x5207     // _IO('R', 0x07)
	maxEntropyBytes    = 4096
)

type syncRequest struct {
	WallClockMs int64  `json:"wallClockMs"`
	Entropy     string `json:"entropy"`
}

type syncResult struct {
	Reseeded bool `json:"reseeded"`
	ClockSet bool `json:"clockSet"`
}

func opSync(c *conn, s *stream, raw json.RawMessage) (any, error) {
	var req syncRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		return nil, newOpError(codeBadRequest, "sync request: %v", err)
	}
	return applySync(req)
}

func applySync(req syncRequest) (syncResult, error) {
	var res syncResult
	entropy, err := base64.StdEncoding.DecodeString(req.Entropy)
	if err != nil || len(entropy) > maxEntropyBytes {
		return res, newOpError(codeBadRequest, "entropy must be base64 of at most %d bytes", maxEntropyBytes)
	}
	if len(entropy) > 0 {
		res.Reseeded = addEntropy(entropy) == nil
	}
	if req.WallClockMs > 0 {
		tv := syscall.NsecToTimeval(req.WallClockMs * 1e6)
		res.ClockSet = syscall.Settimeofday(&tv) == nil
	}
	return res, nil
}

// The random device stays open after the first sync: a template's clones then skip the open
// (path walk, file setup, RCU-deferred free), which under TCG each clone pays in translation.
var urandom struct {
	sync.Mutex
	f *os.File
}

// addEntropy credits the bytes to the pool and forces the CRNG to reseed from it.
func addEntropy(b []byte) error {
	urandom.Lock()
	defer urandom.Unlock()
	if urandom.f == nil {
		f, err := os.OpenFile("/dev/urandom", os.O_WRONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		urandom.f = f
	}
	fd := urandom.f.Fd()
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	buf := make([]byte, 8+len(b)+3)
	binary.LittleEndian.PutUint32(buf[0:], uint32(len(b)*8))
	binary.LittleEndian.PutUint32(buf[4:], uint32(len(b)))
	copy(buf[8:], b)
	if err := rawIoctl(fd, ioctlRndAddEntropy, uintptr(unsafe.Pointer(&buf[0]))); err != nil {
		return err
	}
	return rawIoctl(fd, ioctlRndReseedCrng, 0)
}

// rawIoctl skips the scheduler's syscall path (see rawconn_linux.go): both random ioctls return
// at once, and on a restored clone they run before the hello reply.
func rawIoctl(fd, req, arg uintptr) error {
	if _, _, e := syscall.RawSyscall(syscall.SYS_IOCTL, fd, req, arg); e != 0 {
		return e
	}
	return nil
}
