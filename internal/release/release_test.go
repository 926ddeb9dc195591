package release

import (
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const emptyDigest = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" // SHA-256 of nothing

func TestParseSums(t *testing.T) {
	const d = emptyDigest
	for _, tc := range []struct {
		name, in string
		want     []Entry // nil: an error
	}{
		{"text mode", d + "  a.deb\n", []Entry{{d, "a.deb"}}},
		{"binary mode", d + " *a.deb\n", []Entry{{d, "a.deb"}}},
		{"no final newline", d + "  dir/cohort", []Entry{{d, "dir/cohort"}}},
		{"upper case, blank line", strings.ToUpper(d) + "  a b\n\n", []Entry{{d, "a b"}}},
		{"two", d + "  a\n" + d + "  b\n", []Entry{{d, "a"}, {d, "b"}}},
		{"empty", "", nil},
		{"blank", "\n\n", nil},
		{"escaped", "\\" + d + "  a\\nb\n", nil},
		{"CRLF", d + "  a.deb\r\n", nil},
		{"short digest", d[:63] + "  a.deb\n", nil},
		{"not hex", strings.Replace(d, "e", "g", 1) + "  a.deb\n", nil},
		{"no name", d + "  \n", nil},
		{"tab", d + "\ta.deb\n", nil},
		{"twice", d + "  a.deb\n" + d + "  ./a.deb\n", nil},
		{"BSD format", "SHA256 (a.deb) = " + d + "\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseSums([]byte(tc.in))
			if tc.want == nil {
				if err == nil {
					t.Fatalf("ParseSums(%q) = %v, want an error", tc.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSums(%q): %v", tc.in, err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("ParseSums(%q) = %v, want %v", tc.in, got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("ParseSums(%q) = %v, want %v", tc.in, got, tc.want)
				}
			}
		})
	}
}

// FuzzParseSums: any bytes give entries or an error, never a panic, and
// every entry is a lowercase 64-digit hex digest and a one-line name.
func FuzzParseSums(f *testing.F) {
	const d = emptyDigest
	f.Add([]byte(d + "  cohort_0.2.0_amd64.deb\n" + d + " *cohort_0.2.0_linux_amd64/cohort\n"))
	f.Add([]byte("\\" + d + "  a\\nb\n"))
	f.Add([]byte(d + "  a\r\n\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		entries, err := ParseSums(b)
		if err != nil {
			return
		}
		if len(entries) == 0 {
			t.Fatal("no entries and no error")
		}
		for _, e := range entries {
			if len(e.Digest) != 64 || strings.Trim(e.Digest, "0123456789abcdef") != "" {
				t.Fatalf("digest %q", e.Digest)
			}
			if e.Name == "" || strings.ContainsAny(e.Name, "\n\r\x00") {
				t.Fatalf("name %q", e.Name)
			}
		}
	})
}

func TestCheckFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	amd := write("x_amd64/cohort", "amd64")
	arm := write("x_arm64/cohort", "arm64")
	loose := write("download/cohort", "arm64") // a copy out of its directory
	other := write("download/other", "")
	damaged := write("x_amd64_copy/cohort", "amd65")
	dAMD, _ := FileSHA256(amd)
	dARM, _ := FileSHA256(arm)
	entries := []Entry{{dAMD, "x_amd64/cohort"}, {dARM, "x_arm64/cohort"}}

	for _, tc := range []struct {
		file, wantName string
		wantErr        error
	}{
		{amd, "x_amd64/cohort", nil},
		{arm, "x_arm64/cohort", nil},
		{loose, "x_arm64/cohort", nil},
		{other, "", ErrNotListed},
		{damaged, "", ErrDigestMismatch},
	} {
		e, err := CheckFile(entries, tc.file)
		if !errors.Is(err, tc.wantErr) || e.Name != tc.wantName {
			t.Errorf("CheckFile(%s) = %v, %v; want %q, %v", tc.file, e, err, tc.wantName, tc.wantErr)
		}
	}
	// A file at a listed path is held to that line: the arm64 bytes under
	// the amd64 name are a mismatch, though another line lists them.
	if err := os.WriteFile(amd, []byte("arm64"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := CheckFile(entries, amd); !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), dAMD) {
		t.Errorf("arm64 bytes as the amd64 binary: %v", err)
	}
}

func TestSignAndVerifySignature(t *testing.T) {
	keys, dir := t.TempDir(), t.TempDir()
	pub, err := GenerateKey(keys)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := ReadPrivateKey(filepath.Join(keys, PrivateKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Equal(priv.Public()) {
		t.Fatal("the private key read back is not the pair of the public key")
	}
	pubPEM, _ := os.ReadFile(filepath.Join(keys, PublicKeyFile))
	if got, err := ParsePublicKey(pubPEM); err != nil || !got.Equal(pub) {
		t.Fatalf("ParsePublicKey = %v, %v", got, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "a"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Sign(priv, dir, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	sums, _ := os.ReadFile(filepath.Join(dir, SumsFile))
	sig, _ := os.ReadFile(filepath.Join(dir, SigFile))
	if string(sums) != emptyDigest+"  a\n" {
		t.Errorf("SHA256SUMS = %q", sums)
	}
	if err := VerifySignature(pub, sums, sig); err != nil {
		t.Fatalf("VerifySignature: %v", err)
	}
	otherPub, _, _ := ed25519.GenerateKey(nil)
	for name, tc := range map[string]struct {
		pub       ed25519.PublicKey
		sums, sig []byte
	}{
		"another key":    {otherPub, sums, sig},
		"changed list":   {pub, append([]byte(nil), append(sums, '\n')...), sig},
		"truncated sig":  {pub, sums, sig[:len(sig)-5]},
		"sig not base64": {pub, sums, []byte("!!")},
	} {
		if err := VerifySignature(tc.pub, tc.sums, tc.sig); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: %v, want %v", name, err, ErrBadSignature)
		}
	}
}
