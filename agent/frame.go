package main

// Frame codec for protocol v2 (docs/protocol.md). Pure: no goroutines, no state beyond the reader.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

const (
	frameRequest uint8 = 0x01
	frameResult  uint8 = 0x02
	frameError   uint8 = 0x03
	frameEvent   uint8 = 0x04
	frameStdin   uint8 = 0x05
	frameStdout  uint8 = 0x06
	frameStderr  uint8 = 0x07
	frameData    uint8 = 0x08
	frameEOF     uint8 = 0x09
	frameControl uint8 = 0x0a
	frameCancel  uint8 = 0x0b
	frameWindow  uint8 = 0x0c
)

const (
	headerBytes     = 9
	maxPayloadBytes = 1 << 20
	maxJSONBytes    = 256 << 10
)

// frame is one decoded protocol frame.
type frame struct {
	Type    uint8
	Stream  uint32
	Payload []byte
}

// errProtocol marks decode failures after which the byte stream cannot be resynchronised.
var errProtocol = errors.New("protocol error")

func knownType(t uint8) bool { return t >= frameRequest && t <= frameWindow }

func isJSONType(t uint8) bool {
	switch t {
	case frameRequest, frameResult, frameError, frameEvent, frameControl:
		return true
	}
	return false
}

// readFrame reads exactly one frame. io.EOF is returned only on a clean boundary; a frame cut
// short gives io.ErrUnexpectedEOF. Oversized or unknown frames wrap errProtocol.
func readFrame(r io.Reader) (frame, error) {
	var h [headerBytes]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return frame{}, err
	}
	n := binary.BigEndian.Uint32(h[0:4])
	f := frame{Type: h[4], Stream: binary.BigEndian.Uint32(h[5:9])}
	if !knownType(f.Type) {
		return frame{}, fmt.Errorf("%w: unknown frame type 0x%02x", errProtocol, f.Type)
	}
	// Check the length before allocating: the peer is untrusted and could claim 4 GiB.
	if n > maxPayloadBytes {
		return frame{}, fmt.Errorf("%w: frame payload %d bytes exceeds %d", errProtocol, n, maxPayloadBytes)
	}
	if isJSONType(f.Type) && n > maxJSONBytes {
		return frame{}, fmt.Errorf("%w: JSON payload %d bytes exceeds %d", errProtocol, n, maxJSONBytes)
	}
	f.Payload = make([]byte, n)
	if _, err := io.ReadFull(r, f.Payload); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return frame{}, err
	}
	return f, nil
}

// encodeFrame returns header and payload in one buffer so a single Write keeps frames whole.
func encodeFrame(t uint8, stream uint32, payload []byte) ([]byte, error) {
	if len(payload) > maxPayloadBytes {
		return nil, fmt.Errorf("frame payload %d bytes exceeds %d", len(payload), maxPayloadBytes)
	}
	if isJSONType(t) && len(payload) > maxJSONBytes {
		return nil, fmt.Errorf("JSON payload %d bytes exceeds %d", len(payload), maxJSONBytes)
	}
	buf := make([]byte, headerBytes+len(payload))
	binary.BigEndian.PutUint32(buf[0:4], uint32(len(payload)))
	buf[4] = t
	binary.BigEndian.PutUint32(buf[5:9], stream)
	copy(buf[headerBytes:], payload)
	return buf, nil
}
