package main

// Path resolution for file and archive ops. Symlinks are followed one component at a time and
// interpreted inside root; one that would climb above root is refused, never clamped, so a
// caller always learns that its path pointed somewhere else.

import (
	"os"
	"path"
	"path/filepath"
	"strings"
)

const maxSymlinks = 40

// checkPath validates a protocol path: absolute, no ".." components. It returns it cleaned.
func checkPath(p string) (string, error) {
	if !strings.HasPrefix(p, "/") || strings.IndexByte(p, 0) >= 0 {
		return "", newOpError(codePathEscape, "path %s must be absolute", p)
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return "", newOpError(codePathEscape, "path %s leaves the sandbox", p)
		}
	}
	return path.Clean(p), nil
}

// resolveIn maps the in-sandbox path p (absolute, inside root) to a host path under root,
// following symlinks inside root. Components that do not exist yet are kept literally so the
// result can be created.
func resolveIn(root, p string) (string, error) {
	clean, err := checkPath(p)
	if err != nil {
		return "", err
	}
	return walkIn(root, splitPath(clean), p, true)
}

// walkIn resolves the components todo under root; ".." is allowed but may not climb above root.
// Absolute symlink targets are read inside root when absOK, else refused: an archive
// destination is not the sandbox root, so such a link's meaning cannot be checked there.
func walkIn(root string, todo []string, p string, absOK bool) (string, error) {
	var done []string
	links := 0
	for len(todo) > 0 {
		name := todo[0]
		todo = todo[1:]
		switch name {
		case ".":
			continue
		case "..":
			if len(done) == 0 {
				return "", newOpError(codePathEscape, "path %s leaves the sandbox through a symlink", p)
			}
			done = done[:len(done)-1]
			continue
		}
		cur := filepath.Join(append([]string{root}, append(done, name)...)...)
		st, err := os.Lstat(cur)
		if err != nil || st.Mode()&os.ModeSymlink == 0 {
			done = append(done, name) // missing or not a link: kept as is
			continue
		}
		if links++; links > maxSymlinks {
			return "", newOpError(codeBadRequest, "path %s has too many levels of symlinks", p)
		}
		target, err := os.Readlink(cur)
		if err != nil {
			return "", err
		}
		if strings.HasPrefix(target, "/") {
			if !absOK {
				return "", newOpError(codePathEscape, "path %s goes through an absolute symlink", p)
			}
			done = nil
		}
		todo = append(splitPath(target), todo...)
	}
	return filepath.Join(append([]string{root}, done...)...), nil
}

func splitPath(p string) []string {
	var out []string
	for _, s := range strings.Split(p, "/") {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// resolve maps a request path into the sandbox root.
func resolve(p string) (string, error) { return resolveIn(cfg.root, p) }
