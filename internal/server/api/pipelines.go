package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/oxide-ci/oxide/internal/pipeline"
	"github.com/oxide-ci/oxide/internal/store"
)

// pipelineFile names the definition in invalid_pipeline details.
const pipelineFile = "pipeline.yaml"

// maxNameLen bounds the names of pipelines, templates, secrets and tokens.
const maxNameLen = 128

type pipelineJSON struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	Repository string    `json:"repository"`
	Definition string    `json:"definition"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	Warnings   []string  `json:"warnings,omitempty"` // on create and update
}

func toPipeline(p store.Pipeline) pipelineJSON {
	return pipelineJSON{
		ID: p.ID, Name: p.Name, Repository: p.Repository, Definition: p.Definition,
		CreatedAt: p.CreatedAt.UTC(), UpdatedAt: p.UpdatedAt.UTC(),
	}
}

// checkName validates the name of a pipeline or template: not empty, not
// too long, no control characters or slashes, not . or .. (it appears in
// paths), and text as checkText wants it.
func checkName(what, name string) error {
	switch {
	case strings.TrimSpace(name) == "":
		return invalidf("%s name: required", what)
	case len(name) > maxNameLen:
		return invalidf("%s name: longer than %d bytes", what, maxNameLen)
	case name == "." || name == "..":
		return invalidf("%s name %q: must not be . or ..", what, name)
	case strings.ContainsAny(name, "/\\?#%") || strings.ContainsFunc(name, func(r rune) bool { return r < ' ' || r == 0x7f }):
		return invalidf("%s name %q: must not contain /, \\, ?, #, %% or control characters", what, name)
	}
	return checkText(what+" name", name)
}

// warnings are what a parsed definition asks for that Oxide does not do
// yet, as FILE:LINE:COL: warning: message.
func warnings(p *pipeline.Pipeline) []string {
	var out []string
	for _, w := range p.Warnings {
		out = append(out, w.String())
	}
	return out
}

// warningMemo remembers the warnings of each pipeline's definition, so that
// triggering a run does not parse it once more than the scheduler does.
type warningMemo struct {
	mu sync.Mutex
	m  map[string]memoEntry // by pipeline ID
}

type memoEntry struct {
	def      string
	warnings []string
}

// get returns the warnings of p's definition, parsing it when it is new.
func (m *warningMemo) get(p store.Pipeline) []string {
	m.mu.Lock()
	e, ok := m.m[p.ID]
	m.mu.Unlock()
	if ok && e.def == p.Definition {
		return e.warnings
	}
	e = memoEntry{def: p.Definition}
	if parsed, err := pipeline.Parse(pipelineFile, []byte(p.Definition)); err == nil {
		e.warnings = warnings(parsed)
	}
	m.mu.Lock()
	if m.m == nil || len(m.m) > 10000 { // a crude bound: deleted pipelines leave entries
		m.m = make(map[string]memoEntry)
	}
	m.m[p.ID] = e
	m.mu.Unlock()
	return e.warnings
}

// parseDefinition validates a pipeline definition; its error is a
// pipeline.ErrorList (invalid_pipeline).
func parseDefinition(def string) (*pipeline.Pipeline, error) {
	if strings.TrimSpace(def) == "" {
		return nil, invalidf("definition: required")
	}
	return pipeline.Parse(pipelineFile, []byte(def))
}

func (s *Server) createPipeline(w http.ResponseWriter, r *http.Request, p *principal) error {
	var req struct {
		Name       string `json:"name"`
		Definition string `json:"definition"`
		Repository string `json:"repository"`
	}
	if err := decode(r, &req); err != nil {
		return err
	}
	parsed, err := parseDefinition(req.Definition)
	if err != nil {
		return err
	}
	if req.Name == "" {
		req.Name = parsed.Name // the definition's own name
	}
	if err := checkName("pipeline", req.Name); err != nil {
		return err
	}
	var created store.Pipeline
	err = s.store.InTx(r.Context(), func(tx store.Tx) error {
		created, err = tx.Pipelines().Create(r.Context(), store.Pipeline{Name: req.Name, Repository: req.Repository, Definition: req.Definition})
		if err != nil {
			return fmt.Errorf("pipeline %q: %w", req.Name, err)
		}
		return record(r.Context(), tx, p, auditEntry{"pipeline.create", "pipeline", created.ID, map[string]string{"name": created.Name}})
	})
	if err != nil {
		return err
	}
	out := toPipeline(created)
	out.Warnings = warnings(parsed)
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func (s *Server) listPipelines(w http.ResponseWriter, r *http.Request, _ *principal) error {
	limit, offset, err := pageParams(r)
	if err != nil {
		return err
	}
	all, err := s.store.Pipelines().List(r.Context())
	if err != nil {
		return err
	}
	page, next := paginate(all, limit, offset)
	writeJSON(w, http.StatusOK, list[pipelineJSON]{Items: mapItems(page, toPipeline), Next: next})
	return nil
}

// findPipeline returns the pipeline with the ID, else the one with the
// name.
func findPipeline(ctx context.Context, tx store.Tx, idOrName string) (store.Pipeline, error) {
	p, err := tx.Pipelines().Get(ctx, idOrName)
	if errors.Is(err, store.ErrNotFound) {
		p, err = tx.Pipelines().GetByName(ctx, idOrName)
	}
	if err != nil {
		return store.Pipeline{}, fmt.Errorf("pipeline %q: %w", idOrName, err)
	}
	return p, nil
}

func (s *Server) getPipeline(w http.ResponseWriter, r *http.Request, _ *principal) error {
	p, err := findPipeline(r.Context(), s.store, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toPipeline(p))
	return nil
}

func (s *Server) updatePipeline(w http.ResponseWriter, r *http.Request, p *principal) error {
	var req struct {
		Name       *string `json:"name"`
		Definition *string `json:"definition"`
		Repository *string `json:"repository"`
	}
	if err := decode(r, &req); err != nil {
		return err
	}
	var parsed *pipeline.Pipeline
	if req.Definition != nil {
		var err error
		if parsed, err = parseDefinition(*req.Definition); err != nil {
			return err
		}
	}
	if req.Name != nil {
		if err := checkName("pipeline", *req.Name); err != nil {
			return err
		}
	}
	var updated store.Pipeline
	err := s.store.InTx(r.Context(), func(tx store.Tx) error {
		cur, err := findPipeline(r.Context(), tx, r.PathValue("id"))
		if err != nil {
			return err
		}
		var changed []string
		if req.Name != nil && *req.Name != cur.Name {
			cur.Name, changed = *req.Name, append(changed, "name")
		}
		if req.Definition != nil && *req.Definition != cur.Definition {
			cur.Definition, changed = *req.Definition, append(changed, "definition")
		}
		if req.Repository != nil && *req.Repository != cur.Repository {
			cur.Repository, changed = *req.Repository, append(changed, "repository")
		}
		if updated, err = tx.Pipelines().Update(r.Context(), cur); err != nil {
			return fmt.Errorf("pipeline %q: %w", cur.Name, err)
		}
		return record(r.Context(), tx, p, auditEntry{"pipeline.update", "pipeline", updated.ID,
			map[string]any{"name": updated.Name, "changed": changed}})
	})
	if err != nil {
		return err
	}
	out := toPipeline(updated)
	if parsed != nil {
		out.Warnings = warnings(parsed)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) deletePipeline(w http.ResponseWriter, r *http.Request, p *principal) error {
	err := s.store.InTx(r.Context(), func(tx store.Tx) error {
		cur, err := findPipeline(r.Context(), tx, r.PathValue("id"))
		if err != nil {
			return err
		}
		if err := tx.Pipelines().Delete(r.Context(), cur.ID); err != nil {
			return fmt.Errorf("pipeline %q: %w", cur.Name, err)
		}
		return record(r.Context(), tx, p, auditEntry{"pipeline.delete", "pipeline", cur.ID, map[string]string{"name": cur.Name}})
	})
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
