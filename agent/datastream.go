package main

// Adapters between a stream's DATA frames and io.Reader / io.Writer.

import (
	"io"
)

const dataChunkBytes = 256 << 10

const defaultMaxTransferBytes = 100 << 20

// dataReader reads the DATA frames of a stream until EOF; CANCEL or connection loss ends it
// with CANCELLED.
// Each frame's credit goes back to the host once the frame has been read whole.
type dataReader struct {
	s    *stream
	buf  []byte
	owed int64 // the cost of the frame in buf
	eof  bool
	read int64
}

func (d *dataReader) Read(p []byte) (int, error) {
	for len(d.buf) == 0 {
		if d.owed > 0 {
			d.s.in.consumed(d.owed)
			d.owed = 0
		}
		if d.eof {
			return 0, io.EOF
		}
		f, ok := d.s.in.pop(d.s.ctx.Done())
		if !ok {
			return 0, newOpError(codeCancelled, "transfer cancelled")
		}
		d.owed = frameCost(f)
		switch f.Type {
		case frameData:
			d.buf = f.Payload
		case frameEOF:
			d.eof = true
		}
	}
	n := copy(p, d.buf)
	d.buf = d.buf[n:]
	d.read += int64(n)
	return n, nil
}

// dataWriter sends everything written as DATA frames of at most dataChunkBytes, as the host's
// window allows: a host that does not take the data stops the writer here.
type dataWriter struct {
	c     *conn
	s     *stream
	bytes int64
}

func (w *dataWriter) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		want := len(p)
		if want > dataChunkBytes {
			want = dataChunkBytes
		}
		n, ok := w.s.out.take(want, w.s.ctx.Done())
		if !ok {
			return 0, newOpError(codeCancelled, "transfer cancelled")
		}
		if err := w.c.send(frameData, w.s.id, p[:n]); err != nil {
			return 0, err
		}
		w.bytes += int64(n)
		p = p[n:]
	}
	return total, nil
}

// limitOr returns v when positive, else def.
func limitOr(v, def int64) int64 {
	if v > 0 {
		return v
	}
	return def
}
