package store

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadMasterKey(t *testing.T) {
	key := bytes.Repeat([]byte{0xfb, 0xff}, 16) // "+/" in standard base64, "-_" in URL base64
	const env = "COHORT_TEST_MASTER_KEY"
	tests := []struct {
		name    string
		env     *string // nil: unset
		file    bool
		want    []byte
		wantErr error
	}{
		{"hex", ptr(hex.EncodeToString(key)), false, key, nil},
		{"upper-case hex", ptr(strings.ToUpper(hex.EncodeToString(key))), false, key, nil},
		{"base64", ptr(base64.StdEncoding.EncodeToString(key)), false, key, nil},
		{"base64 unpadded", ptr(base64.RawStdEncoding.EncodeToString(key)), false, key, nil},
		{"base64url", ptr(base64.URLEncoding.EncodeToString(key)), false, key, nil},
		{"base64url unpadded, with a newline", ptr(base64.RawURLEncoding.EncodeToString(key) + "\n"), false, key, nil},
		{"env wins over the file", ptr(hex.EncodeToString(key)), true, key, nil},
		{"too short", ptr(base64.StdEncoding.EncodeToString(key[:16])), false, nil, ErrMasterKeyEnv},
		{"too long hex", ptr(hex.EncodeToString(append(key, 1))), false, nil, ErrMasterKeyEnv},
		{"not an encoding", ptr("this is not a key, it has spaces!"), true, nil, ErrMasterKeyEnv},
		{"set but empty", ptr(""), true, nil, ErrMasterKeyEnv},
		{"unset, no file", nil, false, nil, ErrNoMasterKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != nil {
				t.Setenv(env, *tc.env)
			} else {
				t.Setenv(env, "")
				os.Unsetenv(env)
			}
			file := ""
			if tc.file {
				file = filepath.Join(t.TempDir(), "master.key")
			}
			got, err := LoadMasterKey(file, env)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				if v := strings.TrimSpace(*ptrOr(tc.env, "")); len(v) >= 8 && strings.Contains(err.Error(), v) {
					t.Fatalf("error %q prints the key", err)
				}
				if !strings.Contains(err.Error(), env) {
					t.Errorf("error %q does not name the variable", err)
				}
				return
			}
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("key = %x, want %x", got, tc.want)
			}
			if file != "" {
				if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
					t.Fatal("the key file was created although the environment held the key")
				}
			}
		})
	}
}

func TestLoadMasterKeyFile(t *testing.T) {
	const env = "COHORT_TEST_MASTER_KEY_UNSET"
	t.Setenv(env, "")
	os.Unsetenv(env)
	file := filepath.Join(t.TempDir(), "master.key")
	k1, err := LoadMasterKey(file, env) // created
	must(t, err)
	k2, err := LoadMasterKey(file, "") // read back
	must(t, err)
	if len(k1) != MasterKeySize || !bytes.Equal(k1, k2) {
		t.Fatal("key file not created and read back")
	}
	must(t, os.Chmod(file, 0o644))
	if _, err := LoadMasterKey(file, env); !errors.Is(err, ErrKeyFilePermissions) {
		t.Fatalf("err = %v, want ErrKeyFilePermissions", err)
	}
}

func ptr(s string) *string { return &s }

func ptrOr(p *string, def string) *string {
	if p == nil {
		return &def
	}
	return p
}
