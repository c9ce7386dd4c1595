package registry

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// ErrInvalidName is wrapped by every rejected run id, instance name or
// worker id.
var ErrInvalidName = errors.New("invalid name")

// NewRunID returns a fresh run id: base36 unix milliseconds, "-", 8 random
// hex digits (about 17 characters, [a-z0-9-]). The clock part keeps ids of
// different runs apart even if the random part repeats, and orders them.
func NewRunID() string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand does not fail on Linux; if it ever does, a run id
		// that might collide is worse than a crash at startup.
		panic("registry: crypto/rand failed: " + err.Error())
	}
	return strconv.FormatInt(time.Now().UnixMilli(), 36) + "-" + hex.EncodeToString(b[:])
}

// validRunID accepts 1–64 characters of [A-Za-z0-9_.-] not starting with
// '-' or '.': safe as a separate argv element (never mistaken for a flag),
// in an environment value, and in a registry key (no '/').
func validRunID(id string) error {
	if err := validName(id, 64); err != nil {
		return fmt.Errorf("registry: run id %q: %w (use NewRunID)", id, err)
	}
	return nil
}

// ValidInstance accepts 1–64 characters of [A-Za-z0-9_.-] not starting with
// '-' or '.', so "<instance>.db" is a plain file name.
func ValidInstance(name string) error {
	if err := validName(name, 64); err != nil {
		return fmt.Errorf("registry: instance %q: %w (use letters, digits, '_', '.', '-')", name, err)
	}
	return nil
}

func validName(s string, max int) error {
	if s == "" || len(s) > max {
		return fmt.Errorf("%w: must be 1 to %d characters", ErrInvalidName, max)
	}
	if s[0] == '-' || s[0] == '.' {
		return fmt.Errorf("%w: must not start with '-' or '.'", ErrInvalidName)
	}
	for _, c := range []byte(s) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '.', c == '-':
		default:
			return fmt.Errorf("%w: character %q not allowed", ErrInvalidName, c)
		}
	}
	return nil
}

// DefaultPath returns where the registry of instance lives:
// $SNAKEPIT_STATE_DIR/<instance>.db, else $XDG_STATE_HOME/snakepit/…, else
// ~/.local/state/snakepit/…. An empty instance means "default". It returns
// "" when instance is not a valid name or there is no home directory; Open
// given that empty Path reports which.
func DefaultPath(instance string) string {
	p, _ := defaultPath(instance)
	return p
}

func defaultPath(instance string) (string, error) {
	if instance == "" {
		instance = "default"
	}
	if err := ValidInstance(instance); err != nil {
		return "", err
	}
	dir := os.Getenv("SNAKEPIT_STATE_DIR")
	if dir == "" {
		// The XDG spec says relative values are invalid and to be ignored.
		if x := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(x) {
			dir = filepath.Join(x, "snakepit")
		} else {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", fmt.Errorf("registry: no home directory for the default registry path (%v); set SNAKEPIT_STATE_DIR or Options.Path", err)
			}
			dir = filepath.Join(home, ".local", "state", "snakepit")
		}
	}
	return filepath.Join(dir, instance+".db"), nil
}
