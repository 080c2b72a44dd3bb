package sdk

import (
	"context"
	"net/http"
)

// SubmitJob queues a job.
func (c *Client) SubmitJob(ctx context.Context, spec JobSpec) (Job, error) {
	var j Job
	err := c.do(ctx, http.MethodPost, "/jobs", nil, spec, &j)
	return j, err
}

// SubmitJobs queues jobs, all or none (POST /jobs:batch, 1,000 at most).
func (c *Client) SubmitJobs(ctx context.Context, specs []JobSpec) ([]Job, error) {
	var page Page[Job]
	err := c.do(ctx, http.MethodPost, "/jobs:batch", nil, map[string]any{"jobs": specs}, &page)
	return page.Items, err
}

// GetJob returns a job.
func (c *Client) GetJob(ctx context.Context, id string) (Job, error) {
	var j Job
	err := c.do(ctx, http.MethodGet, path("jobs", id), nil, nil, &j)
	return j, err
}

// ListJobs returns a page of jobs.
func (c *Client) ListJobs(ctx context.Context, opts ListJobsOptions) (Page[Job], error) {
	q := opts.values()
	set(q, "state", string(opts.State))
	set(q, "run_id", opts.RunID)
	var p Page[Job]
	err := c.do(ctx, http.MethodGet, "/jobs", q, nil, &p)
	return p, err
}

// CancelJob asks the server to cancel a job.
func (c *Client) CancelJob(ctx context.Context, id string) (Job, error) {
	var j Job
	err := c.do(ctx, http.MethodPost, path("jobs", id, "cancel"), nil, nil, &j)
	return j, err
}

// JobLogs returns up to limit lines of a job's output after the cursor after,
// like Logs.
func (c *Client) JobLogs(ctx context.Context, jobID, after string, limit int) (LogPage, error) {
	var p LogPage
	err := c.do(ctx, http.MethodGet, path("jobs", jobID, "logs"), logQuery(after, limit), nil, &p)
	return p, err
}

// CreateTemplate stores a job template.
func (c *Client) CreateTemplate(ctx context.Context, req TemplateRequest) (Template, error) {
	var t Template
	err := c.do(ctx, http.MethodPost, "/templates", nil, req, &t)
	return t, err
}

// ListTemplates returns a page of templates.
func (c *Client) ListTemplates(ctx context.Context, opts ListOptions) (Page[Template], error) {
	var p Page[Template]
	err := c.do(ctx, http.MethodGet, "/templates", opts.values(), nil, &p)
	return p, err
}

// GetTemplate returns the template with this ID or name.
func (c *Client) GetTemplate(ctx context.Context, idOrName string) (Template, error) {
	var t Template
	err := c.do(ctx, http.MethodGet, path("templates", idOrName), nil, nil, &t)
	return t, err
}

// UpdateTemplate replaces the template with this ID or name.
func (c *Client) UpdateTemplate(ctx context.Context, idOrName string, req TemplateRequest) (Template, error) {
	var t Template
	err := c.do(ctx, http.MethodPut, path("templates", idOrName), nil, req, &t)
	return t, err
}

// DeleteTemplate deletes the template with this ID or name.
func (c *Client) DeleteTemplate(ctx context.Context, idOrName string) error {
	return c.do(ctx, http.MethodDelete, path("templates", idOrName), nil, nil, nil)
}

// InstantiateTemplate submits a job from the template with this ID or name:
// params maps parameter names to values of their types (string, int or
// float64, bool). Missing, unknown or wrongly typed parameters are
// ErrInvalid, naming them.
func (c *Client) InstantiateTemplate(ctx context.Context, idOrName string, params map[string]any) (Job, error) {
	if params == nil {
		params = map[string]any{}
	}
	body := struct {
		Parameters map[string]any `json:"parameters"`
	}{params}
	var j Job
	err := c.do(ctx, http.MethodPost, path("templates", idOrName, "instantiate"), nil, body, &j)
	return j, err
}
