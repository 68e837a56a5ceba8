package main

import (
	"encoding/json"
	"time"
)

func opPing(c *conn, s *stream, raw json.RawMessage) (any, error) {
	return map[string]int64{"nowMs": time.Now().UnixMilli()}, nil
}
