package sim

import (
	"context"
	"errors"
	"io"
)

// preparePhysioNet splits PhysioNet 2012 by ICU type (filled in when the
// importer lands).
func preparePhysioNet(ctx context.Context, dir string, cfg Config, out io.Writer) (*prepared, error) {
	return nil, errors.New("sim: the physionet dataset is not available yet")
}
