package main

// sync: after a snapshot restore every clone would share the RNG state and a stale clock, so
// the host sends fresh entropy and the time before any user code runs.

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"os"
	"syscall"
	"unsafe"
)

const (
	ioctlRndAddEntropy = 0x40085203 // _IOW('R', 0x03, int[2])
	ioctlRndReseedCrng = 0x5207     // _IO('R', 0x07)
	maxEntropyBytes    = 4096
)

func opSync(c *conn, s *stream, raw json.RawMessage) (any, error) {
	var req struct {
		WallClockMs int64  `json:"wallClockMs"`
		Entropy     string `json:"entropy"`
	}
	if err := json.Unmarshal(raw, &req); err != nil {
		return nil, newOpError(codeBadRequest, "sync request: %v", err)
	}
	entropy, err := base64.StdEncoding.DecodeString(req.Entropy)
	if err != nil || len(entropy) > maxEntropyBytes {
		return nil, newOpError(codeBadRequest, "entropy must be base64 of at most %d bytes", maxEntropyBytes)
	}
	res := map[string]bool{"reseeded": false, "clockSet": false}
	if len(entropy) > 0 {
		res["reseeded"] = addEntropy(entropy) == nil
	}
	if req.WallClockMs > 0 {
		tv := syscall.NsecToTimeval(req.WallClockMs * 1e6)
		res["clockSet"] = syscall.Settimeofday(&tv) == nil
	}
	return res, nil
}

// addEntropy credits the bytes to the pool and forces the CRNG to reseed from it.
func addEntropy(b []byte) error {
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	buf := make([]byte, 8+len(b)+3)
	binary.LittleEndian.PutUint32(buf[0:], uint32(len(b)*8))
	binary.LittleEndian.PutUint32(buf[4:], uint32(len(b)))
	copy(buf[8:], b)
	if err := ioctl(f.Fd(), ioctlRndAddEntropy, uintptr(unsafe.Pointer(&buf[0]))); err != nil {
		return err
	}
	return ioctl(f.Fd(), ioctlRndReseedCrng, 0)
}
