package coordinator

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/cohort-fl/cohort/internal/secretfile"
)

// NewAdminToken returns a new token string, for a bootstrap token file
// made ahead of the cluster (`cohort admin token new`).
func NewAdminToken() (string, error) {
	_, secret, err := newToken()
	return secret, err
}

// bootstrapToken creates the cluster's first admin token, once: from the
// configured bootstrap token file when it exists, else a new token written
// there (owner-only). Called by a new leader while the state has none.
func (n *Node) bootstrapToken() error {
	path := n.auth.BootstrapTokenFile
	secret, err := readTokenFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if secret, err = NewAdminToken(); err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return fmt.Errorf("bootstrap token: %w", err)
		}
		if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
			return fmt.Errorf("bootstrap token: %w", err)
		}
		n.log.Info("bootstrap admin token written", "path", path)
	case err != nil:
		return err
	}
	id, _ := tokenID(secret)
	tk := Token{ID: id, Hash: hashToken(secret), Person: "bootstrap-admin", Role: RoleAdmin,
		Expires: n.now().Add(time.Duration(n.auth.BootstrapTTL)).UTC()}
	ev := &AuditEntry{Kind: "admin", Actor: "coordinator", Action: "token.bootstrap", Target: "token " + id, Node: n.cfg.ID, Status: 201}
	if err := n.proposeAudited(cmdCreateToken, tk, ev); err != nil {
		return fmt.Errorf("bootstrap token: %w", err)
	}
	return nil
}

// readTokenFile reads a token from a file readable by its owner only.
func readTokenFile(path string) (string, error) {
	s, err := secretfile.Read(path, "token file")
	if err != nil {
		return "", err
	}
	if _, ok := tokenID(s); !ok {
		return "", fmt.Errorf("token file %s does not hold a Cohort token (make one with `cohort admin token new`)", path)
	}
	return s, nil
}

// ReadTokenFile reads an admin token from a file readable by its owner
// only, as the CLI and the bootstrap do.
func ReadTokenFile(path string) (string, error) { return readTokenFile(path) }
