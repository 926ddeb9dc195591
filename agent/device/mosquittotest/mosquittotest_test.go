package mosquittotest

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestStopRestartKill(t *testing.T) {
	b := Start(t, Options{MaxInflight: 5})
	dial := func() error {
		c, err := net.DialTimeout("tcp", b.Addr(), time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial(); err != nil {
		t.Fatalf("not accepting after Start: %v", err)
	}
	b.Stop()
	if err := dial(); err == nil {
		t.Fatal("still accepting after Stop")
	}
	if _, err := os.Stat(filepath.Join(b.Dir(), "mosquitto.db")); err != nil {
		t.Errorf("no persistence file after a clean stop: %v\n%s", err, b.Log())
	}
	b.Restart()
	if err := dial(); err != nil {
		t.Fatalf("not accepting after Restart: %v", err)
	}
	b.Kill()
	b.Restart()
	if err := dial(); err != nil {
		t.Fatalf("not accepting after Kill and Restart: %v", err)
	}
	if b.URL() != "tcp://"+b.Addr() {
		t.Errorf("URL %q", b.URL())
	}
}
