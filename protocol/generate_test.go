package protocol

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGeneratedCodeIsCurrent regenerates protocol/pb into a temporary
// directory and fails if it differs from the committed code. It needs
// protoc; CI installs it (.ci/run), elsewhere the test skips.
func TestGeneratedCodeIsCurrent(t *testing.T) {
	protoc, err := exec.LookPath("protoc")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("protoc is not installed; .ci/run installs protobuf-compiler")
		}
		t.Skip("protoc not installed (apt-get install protobuf-compiler)")
	}
	plugin := filepath.Join(goBin(t), "protoc-gen-go")
	if _, err := os.Stat(plugin); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("protoc-gen-go missing at %s; run scripts/genproto.sh", plugin)
		}
		t.Skipf("protoc-gen-go missing at %s; run scripts/genproto.sh once", plugin)
	}
	out := t.TempDir()
	cmd := exec.Command(protoc, "--plugin=protoc-gen-go="+plugin, "--proto_path=.", "--go_out="+out, "--go_opt=paths=source_relative", "cohort.proto")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("protoc: %v\n%s", err, b)
	}
	got, err := os.ReadFile(filepath.Join(out, "cohort.pb.go"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join("pb", "cohort.pb.go"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("protocol/pb/cohort.pb.go is stale: run scripts/genproto.sh and commit the result")
	}
}

func goBin(t *testing.T) string {
	if b := os.Getenv("GOBIN"); b != "" {
		return b
	}
	out, err := exec.Command("go", "env", "GOPATH").Output()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(string(bytes.TrimSpace(out)), "bin")
}
