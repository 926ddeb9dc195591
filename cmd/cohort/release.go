package main

import (
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/cohort-fl/cohort/internal/release"
)

const releaseUsage = `Usage: cohort release <keygen|sign> [flags]

Makes and signs the checksum list of a release (scripts/release.sh calls it;
docs/security-tooling.md describes the whole chain). 'cohort verify' checks
artifacts against the list.

  cohort release keygen -o DIR
      writes a new Ed25519 key pair: DIR/release-key (the private key, PEM
      PKCS#8, mode 0600) and DIR/release-key.pub (the public key, PEM PKIX);
      never overwrites a key

  cohort release sign --key FILE --dir DIR ARTIFACT...
      writes DIR/SHA256SUMS (one "SHA256  NAME" line per artifact, sorted,
      NAME relative to DIR, as sha256sum prints it) and DIR/SHA256SUMS.sig
      (the base64 of the Ed25519 signature of SHA256SUMS's exact bytes, on
      one line). The private key file must be readable by its owner only.
`

// runRelease implements `cohort release`.
func runRelease(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, releaseUsage)
		return errors.New("release: give keygen or sign")
	}
	switch args[0] {
	case "keygen":
		return runReleaseKeygen(args[1:], stdout, stderr)
	case "sign":
		return runReleaseSign(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, releaseUsage)
		return nil
	}
	fmt.Fprint(stderr, releaseUsage)
	return fmt.Errorf("release: unknown command %q", args[0])
}

func runReleaseKeygen(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("release keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("o", "", "write release-key and release-key.pub into this `directory`")
	fs.Usage = func() { fmt.Fprint(stderr, releaseUsage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || fs.NArg() != 0 {
		fs.Usage()
		return errors.New("release keygen: give -o DIR and nothing else")
	}
	pub, err := release.GenerateKey(*dir)
	if err != nil {
		return fmt.Errorf("release keygen: %w", err)
	}
	fmt.Fprintf(stdout, "private key %s (keep it offline, owner-only)\npublic key  %s\nfingerprint %s\n",
		filepath.Join(*dir, release.PrivateKeyFile), filepath.Join(*dir, release.PublicKeyFile), release.Fingerprint(pub))
	return nil
}

func runReleaseSign(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("release sign", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyPath := fs.String("key", "", "the release's private key `file` (PEM, mode 0600)")
	dir := fs.String("dir", "", "the release `directory`: artifacts are named relative to it; SHA256SUMS and SHA256SUMS.sig are written into it")
	fs.Usage = func() { fmt.Fprint(stderr, releaseUsage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *keyPath == "" || *dir == "" || fs.NArg() == 0 {
		fs.Usage()
		return errors.New("release sign: give --key FILE, --dir DIR and at least one artifact")
	}
	priv, err := release.ReadPrivateKey(*keyPath)
	if err != nil {
		return fmt.Errorf("release sign: %w", err)
	}
	if err := release.Sign(priv, *dir, fs.Args()); err != nil {
		return fmt.Errorf("release sign: %w", err)
	}
	fmt.Fprintf(stdout, "signed %d artifacts: %s, %s (key %s)\n", fs.NArg(),
		filepath.Join(*dir, release.SumsFile), filepath.Join(*dir, release.SigFile), release.Fingerprint(priv.Public().(ed25519.PublicKey)))
	return nil
}
