package coordinator

import (
	"strings"
	"testing"
	"time"
)

// FuzzAuthHeader feeds arbitrary Authorization headers and enrollment
// tokens to the parsers: they never panic, and only the real secrets
// authenticate.
func FuzzAuthHeader(f *testing.F) {
	id, secret, err := newToken()
	if err != nil {
		f.Fatal(err)
	}
	eid, esecret, err := newEnrollToken()
	if err != nil {
		f.Fatal(err)
	}
	now := time.Now()
	st := newState()
	st.Tokens[id] = &Token{ID: id, Hash: hashToken(secret), Person: "p", Role: RoleViewer, Expires: now.Add(time.Hour)}
	st.Sites["s"] = &Site{ID: "s"}
	st.EnrollTokens[eid] = &EnrollToken{ID: eid, Hash: hashToken(esecret), Site: "s", Expires: now.Add(time.Hour)}
	for _, s := range []string{"", "Bearer ", "Bearer " + secret, "Bearer " + secret + "x", "Bearer cohort_t_x", "Basic abc",
		"Bearer " + strings.Replace(secret, "_", "__", 1), esecret, "cohortenroll_e0000000000_", "\x00\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		tok, err := st.authenticate(h, now)
		if err == nil && strings.TrimSpace(strings.TrimPrefix(h, "Bearer ")) != secret {
			t.Fatalf("header %q authenticated as %v", h, tok)
		}
		et, err := st.checkEnrollToken(strings.TrimSpace(h), now)
		if err == nil && strings.TrimSpace(h) != esecret {
			t.Fatalf("%q passed as enrollment token %v", h, et)
		}
		_, _ = paginate([]string{"a", "b", "c"}, func(s string) string { return s }, 1+len(h)%3, h)
	})
}
