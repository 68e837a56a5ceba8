package main

// Per-stream flow control (docs/protocol.md, "Flow control"). Each direction of a stream has a
// window of initialWindowBytes; a STDIN/STDOUT/STDERR/DATA/EOF frame costs its payload length plus
// frameCostBytes, and the receiver hands the cost back with WINDOW frames as it consumes. So the
// host's data for one stream waits in our queue, never in the connection reader (a program that
// does not read its stdin cannot stall pings, other execs or cancel), and our output waits in the
// program's pipe until the host has room for it.

import (
	"encoding/binary"
	"fmt"
	"sync"
)

// protocolVersion 2 is version 1 plus per-stream flow control (WINDOW frames).
const protocolVersion = 2

const (
	initialWindowBytes = 1 << 20
	// frameCostBytes is charged per frame on top of its payload, so that many tiny frames cannot
	// hold more memory than the window says.
	frameCostBytes = 32
	// Credit is handed back in batches of at least this much (it is below the window, so the
	// sender never waits on a batch).
	grantBatchBytes = initialWindowBytes / 4
)

func frameCost(f frame) int64 { return int64(len(f.Payload)) + frameCostBytes }

// inbox queues the host's data frames of one stream. push never blocks: the reader hands the
// frame over and goes on; a host that overruns the window has broken the protocol.
type inbox struct {
	c       *conn
	id      uint32
	mu      sync.Mutex
	q       []frame
	avail   int64 // what the host may still send
	owed    int64 // consumed, not yet handed back
	wake    chan struct{}
	drained bool // the op is over: frames are consumed (and credited) as they come
}

func newInbox(c *conn, id uint32) *inbox {
	return &inbox{c: c, id: id, avail: initialWindowBytes, wake: make(chan struct{}, 1)}
}

func (b *inbox) push(f frame) error {
	cost := frameCost(f)
	b.mu.Lock()
	b.avail -= cost
	if b.avail < 0 {
		b.mu.Unlock()
		return fmt.Errorf("%w: host overran stream %d's window", errProtocol, b.id)
	}
	if b.drained {
		b.mu.Unlock()
		b.consumed(cost)
		return nil
	}
	b.q = append(b.q, f)
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	return nil
}

// pop waits for the next frame; ok=false once stop is closed. The caller calls consumed with the
// frame's cost once it has passed the frame on (written it to the pipe or the file).
func (b *inbox) pop(stop <-chan struct{}) (frame, bool) {
	for {
		b.mu.Lock()
		if len(b.q) > 0 {
			f := b.q[0]
			b.q[0] = frame{}
			b.q = b.q[1:]
			b.mu.Unlock()
			return f, true
		}
		b.mu.Unlock()
		select {
		case <-b.wake:
		case <-stop:
			return frame{}, false
		}
	}
}

// consumed hands credit back to the host, in batches.
func (b *inbox) consumed(cost int64) {
	b.mu.Lock()
	b.owed += cost
	grant := int64(0)
	if b.owed >= grantBatchBytes {
		grant, b.owed = b.owed, 0
		b.avail += grant
	}
	b.mu.Unlock()
	if grant > 0 {
		b.c.sendWindow(b.id, grant)
	}
}

// discard drops what is queued and everything that comes later, handing the credit back (an op
// that reads no input, or one that has stopped reading).
func (b *inbox) discard() {
	b.mu.Lock()
	b.drained = true
	cost := int64(0)
	for _, f := range b.q {
		cost += frameCost(f)
	}
	b.q = nil
	b.mu.Unlock()
	if cost > 0 {
		b.consumed(cost)
	}
}

// outWindow is the credit the host gave us for this stream's output.
type outWindow struct {
	mu    sync.Mutex
	avail int64
	wake  chan struct{}
}

func newOutWindow() *outWindow {
	return &outWindow{avail: initialWindowBytes, wake: make(chan struct{}, 1)}
}

func (w *outWindow) add(n int64) {
	w.mu.Lock()
	w.avail += n
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// take waits until at least one payload byte fits, then reserves up to max payload bytes (plus
// the frame's cost) and returns how many. ok=false once any stop channel is closed.
func (w *outWindow) take(max int, stops ...<-chan struct{}) (int, bool) {
	var stop1, stop2 <-chan struct{}
	if len(stops) > 0 {
		stop1 = stops[0]
	}
	if len(stops) > 1 {
		stop2 = stops[1]
	}
	for {
		w.mu.Lock()
		if w.avail > frameCostBytes {
			n := w.avail - frameCostBytes
			if n > int64(max) {
				n = int64(max)
			}
			w.avail -= n + frameCostBytes
			w.mu.Unlock()
			return int(n), true
		}
		w.mu.Unlock()
		select {
		case <-w.wake:
		case <-stop1:
			return 0, false
		case <-stop2:
			return 0, false
		}
	}
}

// settle returns what take reserved but was not sent: the unsent payload bytes, and the frame's
// cost too when no frame went out.
func (w *outWindow) settle(reserved, sent int) {
	back := int64(reserved - sent)
	if sent == 0 {
		back += frameCostBytes
	}
	if back > 0 {
		w.add(back)
	}
}

func parseWindow(f frame) (int64, error) {
	if len(f.Payload) != 4 {
		return 0, fmt.Errorf("%w: WINDOW payload must be 4 bytes, got %d", errProtocol, len(f.Payload))
	}
	n := binary.BigEndian.Uint32(f.Payload)
	if n == 0 || n > 1<<31-1 {
		return 0, fmt.Errorf("%w: WINDOW increment %d out of range", errProtocol, n)
	}
	return int64(n), nil
}

func (c *conn) sendWindow(id uint32, n int64) {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(n))
	_ = c.send(frameWindow, id, b[:])
}
