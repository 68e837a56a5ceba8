package main

import (
	"os"
	"time"
)

const agentVersion = "kiln-agent/0.1.0"

var agentStart = time.Now()

type helloResult struct {
	Version   int         `json:"version"`
	Agent     string      `json:"agent"`
	Pid       int         `json:"pid"`
	Transport string      `json:"transport"`
	UID       int         `json:"uid"`
	BootMs    float64     `json:"bootMs"`
	Sync      *syncResult `json:"sync,omitempty"`
}

// answerHello runs inline in the reader (under c.mu) so no request can overtake the handshake.
// A hello that carries `sync` (a restored clone) reseeds and sets the clock before it answers:
// one round trip instead of two, before any user code can run.
func (c *conn) answerHello(id uint32, versions []int, sync *syncRequest) {
	for _, v := range versions {
		if v != protocolVersion {
			continue
		}
		res := helloResult{
			Version: protocolVersion, Agent: agentVersion, Pid: os.Getpid(), Transport: c.transport,
			UID: os.Getuid(), BootMs: msSince(agentStart),
		}
		if sync != nil {
			synced, err := applySync(*sync)
			if err != nil {
				c.sendError(id, toOpError(err))
				return
			}
			res.Sync = &synced
		}
		c.hello = true
		if b, ok := appendHelloResult(make([]byte, 0, 192), res); ok {
			c.send(frameResult, id, b)
		} else {
			c.sendJSON(frameResult, id, res)
		}
		return
	}
	c.sendError(id, newOpError(codeUnsupportedVersion, "agent speaks protocol version %d only; offered %v", protocolVersion, versions))
}

func msSince(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }
