package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/oxide-ci/oxide/internal/jobspec"
	"github.com/oxide-ci/oxide/internal/store"
)

type templateJSON struct {
	ID          string              `json:"id"`
	Name        string              `json:"name"`
	Description string              `json:"description,omitempty"`
	Version     int                 `json:"version"`
	Parameters  []jobspec.Parameter `json:"parameters"`
	Spec        json.RawMessage     `json:"spec"`
	CreatedAt   time.Time           `json:"created_at"`
	UpdatedAt   time.Time           `json:"updated_at"`
}

func toTemplate(t store.Template) templateJSON {
	out := templateJSON{
		ID: t.ID, Name: t.Name, Description: t.Description, Version: t.Version, Spec: t.Spec,
		CreatedAt: t.CreatedAt.UTC(), UpdatedAt: t.UpdatedAt.UTC(),
	}
	if tp, err := jobspec.DecodeTemplate(t.Parameters, t.Spec); err == nil {
		out.Parameters = tp.Parameters
	}
	if out.Parameters == nil {
		out.Parameters = []jobspec.Parameter{}
	}
	if len(out.Spec) == 0 {
		out.Spec = json.RawMessage("{}")
	}
	return out
}

// templateRequest is the body of POST and PUT /templates: on PUT, absent
// fields keep their values.
type templateRequest struct {
	Name        *string             `json:"name"`
	Description *string             `json:"description"`
	Parameters  []jobspec.Parameter `json:"parameters"`
	Spec        json.RawMessage     `json:"spec"`
}

// apply sets t's fields from the request and validates the template.
func (req *templateRequest) apply(t *store.Template) error {
	if req.Name != nil {
		t.Name = *req.Name
	}
	if err := checkName("template", t.Name); err != nil {
		return err
	}
	if req.Description != nil {
		t.Description = *req.Description
	}
	if req.Parameters != nil {
		b, err := json.Marshal(req.Parameters)
		if err != nil {
			return invalidf("parameters: %v", err)
		}
		t.Parameters = b
	}
	if req.Spec != nil {
		t.Spec = req.Spec
	}
	if len(t.Spec) == 0 {
		return invalidf("spec: required")
	}
	tp, err := jobspec.DecodeTemplate(t.Parameters, t.Spec)
	if err != nil {
		return invalidf("%v", err)
	}
	if err := tp.Validate(); err != nil {
		return fmt.Errorf("invalid template: %w", err)
	}
	return nil
}

func (s *Server) createTemplate(w http.ResponseWriter, r *http.Request, p *principal) error {
	var req templateRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	var t store.Template
	if err := req.apply(&t); err != nil {
		return err
	}
	err := s.store.InTx(r.Context(), func(tx store.Tx) (err error) {
		if t, err = tx.Templates().Create(r.Context(), t); err != nil {
			return fmt.Errorf("template %q: %w", t.Name, err)
		}
		return record(r.Context(), tx, p, auditEntry{"template.create", "template", t.ID, map[string]string{"name": t.Name}})
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, toTemplate(t))
	return nil
}

func (s *Server) listTemplates(w http.ResponseWriter, r *http.Request, _ *principal) error {
	limit, offset, err := pageParams(r)
	if err != nil {
		return err
	}
	all, err := s.store.Templates().List(r.Context())
	if err != nil {
		return err
	}
	page, next := paginate(all, limit, offset)
	writeJSON(w, http.StatusOK, list[templateJSON]{Items: mapItems(page, toTemplate), Next: next})
	return nil
}

// findTemplate returns the template with the ID, else the one with the
// name.
func findTemplate(ctx context.Context, tx store.Tx, idOrName string) (store.Template, error) {
	t, err := tx.Templates().Get(ctx, idOrName)
	if errors.Is(err, store.ErrNotFound) {
		t, err = tx.Templates().GetByName(ctx, idOrName)
	}
	if err != nil {
		return store.Template{}, fmt.Errorf("template %q: %w", idOrName, err)
	}
	return t, nil
}

func (s *Server) getTemplate(w http.ResponseWriter, r *http.Request, _ *principal) error {
	t, err := findTemplate(r.Context(), s.store, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toTemplate(t))
	return nil
}

func (s *Server) updateTemplate(w http.ResponseWriter, r *http.Request, p *principal) error {
	var req templateRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	var t store.Template
	err := s.store.InTx(r.Context(), func(tx store.Tx) (err error) {
		if t, err = findTemplate(r.Context(), tx, r.PathValue("id")); err != nil {
			return err
		}
		if err := req.apply(&t); err != nil {
			return err
		}
		if t, err = tx.Templates().Update(r.Context(), t); err != nil {
			return fmt.Errorf("template %q: %w", t.Name, err)
		}
		return record(r.Context(), tx, p, auditEntry{"template.update", "template", t.ID, map[string]any{"name": t.Name, "version": t.Version}})
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toTemplate(t))
	return nil
}

func (s *Server) deleteTemplate(w http.ResponseWriter, r *http.Request, p *principal) error {
	err := s.store.InTx(r.Context(), func(tx store.Tx) error {
		t, err := findTemplate(r.Context(), tx, r.PathValue("id"))
		if err != nil {
			return err
		}
		if err := tx.Templates().Delete(r.Context(), t.ID); err != nil {
			return fmt.Errorf("template %q: %w", t.Name, err)
		}
		return record(r.Context(), tx, p, auditEntry{"template.delete", "template", t.ID, map[string]string{"name": t.Name}})
	})
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) instantiateTemplate(w http.ResponseWriter, r *http.Request, p *principal) error {
	var req struct {
		Parameters map[string]any `json:"parameters"`
	}
	if err := decodeOptional(r, &req); err != nil {
		return err
	}
	t, err := findTemplate(r.Context(), s.store, r.PathValue("id"))
	if err != nil {
		return err
	}
	tp, err := jobspec.DecodeTemplate(t.Parameters, t.Spec)
	if err != nil {
		return fmt.Errorf("template %q: %w", t.Name, err)
	}
	spec, err := tp.Instantiate(req.Parameters)
	if err != nil {
		return fmt.Errorf("cannot instantiate template %q: %w", t.Name, err)
	}
	job, err := s.control.SubmitJob(r.Context(), spec, p.Name)
	if err != nil {
		return err
	}
	s.audit(r.Context(), p, auditEntry{"template.instantiate", "job", job.ID,
		map[string]any{"template_id": t.ID, "template": t.Name, "version": t.Version}})
	writeJSON(w, http.StatusCreated, toJob(job))
	return nil
}
