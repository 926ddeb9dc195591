package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/cohort-fl/cohort/internal/release"
)

const verifyUsage = `Usage: cohort verify --key release-key.pub [--sums SHA256SUMS] [--sig SHA256SUMS.sig] FILE...

Checks downloaded release artifacts: first that SHA256SUMS.sig is the
release key's Ed25519 signature of SHA256SUMS (the base64 of the 64-byte
signature of the file's exact bytes), then that each FILE's SHA-256 is the
one SHA256SUMS lists for it. A FILE is found in the list by its base name;
when several listed files share it (the binaries,
cohort_VERSION_linux_ARCH/cohort), by the longest matching path, or else
by its digest. Exits 0 when the signature and every FILE check out, 1
otherwise, saying what failed.

The key is the release's PEM public key; docs/security-tooling.md says
where it is published and how to check it.

Flags:
`

// runVerify implements `cohort verify`.
func runVerify(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyPath := fs.String("key", "", "the release's public key `file` (PEM)")
	sumsPath := fs.String("sums", release.SumsFile, "the checksum list `file`")
	sigPath := fs.String("sig", "", "the signature `file` (default: the checksum list's name with .sig)")
	fs.Usage = func() { fmt.Fprint(stderr, verifyUsage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *keyPath == "" || fs.NArg() == 0 {
		fs.Usage()
		return errors.New("verify: give --key FILE and at least one FILE to check")
	}
	if *sigPath == "" {
		*sigPath = *sumsPath + ".sig"
	}

	keyBytes, err := release.ReadFileMax(*keyPath, release.MaxKeySize)
	if err != nil {
		return fmt.Errorf("verify: key: %w", err)
	}
	pub, err := release.ParsePublicKey(keyBytes)
	if err != nil {
		return fmt.Errorf("verify: key file %s: %w", *keyPath, err)
	}
	sums, err := release.ReadFileMax(*sumsPath, release.MaxSumsSize)
	if err != nil {
		return fmt.Errorf("verify: checksum list: %w", err)
	}
	sig, err := release.ReadFileMax(*sigPath, release.MaxSigSize)
	if err != nil {
		return fmt.Errorf("verify: signature: %w", err)
	}
	if err := release.VerifySignature(pub, sums, sig); err != nil {
		return fmt.Errorf("verify: %s by key %s (%s), signature %s: %w; no file was checked",
			*sumsPath, *keyPath, release.Fingerprint(pub), *sigPath, err)
	}
	entries, err := release.ParseSums(sums)
	if err != nil {
		return fmt.Errorf("verify: %s: %w", *sumsPath, err)
	}
	fmt.Fprintf(stdout, "signature OK: %s is signed by %s\n", *sumsPath, release.Fingerprint(pub))

	var failed []error
	for _, file := range fs.Args() {
		e, err := release.CheckFile(entries, file)
		if err != nil {
			failed = append(failed, fmt.Errorf("%s: %w", file, err))
			continue
		}
		fmt.Fprintf(stdout, "OK %s (%s sha256:%s)\n", file, e.Name, e.Digest)
	}
	if len(failed) > 0 {
		return fmt.Errorf("verify: %d of %d files failed:\n%w", len(failed), fs.NArg(), errors.Join(failed...))
	}
	return nil
}
