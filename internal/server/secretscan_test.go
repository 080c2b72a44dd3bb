package server

import (
	"encoding/base64"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/testkit"
)

// TestSecretBytesScan: after a full run that prints a stored secret in
// several forms and writes it into a step output, no byte sequence of the
// secret or of its base64 is anywhere in the server's data directory (the
// SQLite database with its WAL, the JetStream store, keys, logs) nor in
// the run's logs and tree through the API (issue 11, items 4 and 5).
func TestSecretBytesScan(t *testing.T) {
	const secret = "pr1vate-Parity-S3cret-v4lue"
	cfg := testConfig(t)
	s := startServer(t, cfg)
	s.call(t, "PUT", "/api/v1/secrets/DEPLOY_TOKEN", s.Token, map[string]string{"value": secret}).want(t, 200, nil)
	def := `version: "1"
name: scanned
stages:
  - name: leak
    secrets:
      - name: TOKEN
        source: {provider: oxide, path: DEPLOY_TOKEN}
    steps:
      - name: print
        id: p
        run: |
          echo "raw $TOKEN"
          echo "stderr $TOKEN" >&2
          printf %s "$TOKEN" | base64
          printf 'xy%s' "$TOKEN" | base64
          echo "url=https://x/?t=$TOKEN" >> "$OXIDE_OUTPUT"
  - name: later
    steps:
      - name: use
        run: echo "got ${{ steps.p.outputs.url }}"
`
	var p struct{ ID string }
	s.call(t, "POST", "/api/v1/pipelines", s.Token, map[string]string{"definition": def}).want(t, 201, &p)
	var run runJSON
	s.call(t, "POST", "/api/v1/pipelines/"+p.ID+"/runs", s.Token, map[string]any{}).want(t, 201, &run)
	testkit.Until(t, 60*time.Second, func() (bool, string) {
		s.call(t, "GET", "/api/v1/runs/"+run.ID, s.Token, nil).want(t, 200, &run)
		return run.Status == "success", "run status " + run.Status
	})
	forms := []string{secret, base64.StdEncoding.EncodeToString([]byte(secret))[:20], base64.URLEncoding.EncodeToString([]byte(secret))[:20]}
	check := func(where, text string) {
		t.Helper()
		for _, f := range forms {
			if strings.Contains(text, f) {
				t.Errorf("%s holds the secret (as %q)", where, f)
			}
		}
	}
	logs := s.call(t, "GET", "/api/v1/runs/"+run.ID+"/logs", s.Token, nil)
	if !strings.Contains(string(logs.body), "raw ***") || !strings.Contains(string(logs.body), "got https://x/?t=***") {
		t.Fatalf("the run's log is not what the pipeline prints: %s", logs.body)
	}
	check("the run's log", string(logs.body))
	check("the run's tree", string(s.call(t, "GET", "/api/v1/runs/"+run.ID, s.Token, nil).body))

	if err := s.stop(30 * time.Second); err != nil { // everything on disk
		t.Fatal(err)
	}
	files := 0
	err := filepath.WalkDir(cfg.DataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		check(path, string(b))
		return nil
	})
	if err != nil || files < 3 {
		t.Fatalf("scanned %d files: %v", files, err)
	}
}
