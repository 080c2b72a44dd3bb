package docker

import "testing"

// TestPullQuery: a reference is pulled by its name and its tag or digest,
// as the moby client sends it.
func TestPullQuery(t *testing.T) {
	t.Parallel()
	for ref, want := range map[string][2]string{
		"busybox":                             {"busybox", "latest"},
		"alpine:3.20":                         {"alpine", "3.20"},
		"127.0.0.1:5000/oxide-test/private:1": {"127.0.0.1:5000/oxide-test/private", "1"},
		"localhost:5000/team/app":             {"localhost:5000/team/app", "latest"},
		"alpine@sha256:abc":                   {"alpine", "sha256:abc"},
		"alpine:3.20@sha256:abc":              {"alpine", "sha256:abc"},
	} {
		q := pullQuery(ref)
		if got := [2]string{q.Get("fromImage"), q.Get("tag")}; got != want {
			t.Errorf("pullQuery(%q) = %q; want %q", ref, got, want)
		}
	}
}

func TestOlderVersion(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		a, b string
		want bool
	}{{"1.47", "1.52", true}, {"1.52", "1.52", false}, {"1.9", "1.10", true}, {"1.56", "1.52", false}, {"2.0", "1.52", false}} {
		if got := olderVersion(c.a, c.b); got != c.want {
			t.Errorf("olderVersion(%s, %s) = %v", c.a, c.b, got)
		}
	}
}
