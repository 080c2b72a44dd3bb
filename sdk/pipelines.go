package sdk

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// CreatePipeline stores a new pipeline. An invalid definition is an *Error
// with code invalid_pipeline whose Details list every FILE:LINE:COL: message;
// a taken name is ErrConflict.
func (c *Client) CreatePipeline(ctx context.Context, req CreatePipelineRequest) (Pipeline, error) {
	var p Pipeline
	err := c.do(ctx, http.MethodPost, "/pipelines", nil, req, &p)
	return p, err
}

// ListPipelines returns a page of pipelines.
func (c *Client) ListPipelines(ctx context.Context, opts ListOptions) (Page[Pipeline], error) {
	var p Page[Pipeline]
	err := c.do(ctx, http.MethodGet, "/pipelines", opts.values(), nil, &p)
	return p, err
}

// GetPipeline returns the pipeline with this ID or name.
func (c *Client) GetPipeline(ctx context.Context, idOrName string) (Pipeline, error) {
	var p Pipeline
	err := c.do(ctx, http.MethodGet, path("pipelines", idOrName), nil, nil, &p)
	return p, err
}

// UpdatePipeline changes the fields of the pipeline with this ID or name that
// req sets, validating a new definition as CreatePipeline does.
func (c *Client) UpdatePipeline(ctx context.Context, idOrName string, req UpdatePipelineRequest) (Pipeline, error) {
	var p Pipeline
	err := c.do(ctx, http.MethodPut, path("pipelines", idOrName), nil, req, &p)
	return p, err
}

// DeletePipeline deletes the pipeline with this ID or name.
func (c *Client) DeletePipeline(ctx context.Context, idOrName string) error {
	return c.do(ctx, http.MethodDelete, path("pipelines", idOrName), nil, nil, nil)
}

// TriggerRun starts a run of the pipeline with this ID or name; the run
// answered is queued.
func (c *Client) TriggerRun(ctx context.Context, pipeline string, req TriggerRequest) (Run, error) {
	var r Run
	err := c.do(ctx, http.MethodPost, path("pipelines", pipeline, "runs"), nil, req, &r)
	return r, err
}

// ListRuns returns a page of a pipeline's runs, newest first.
func (c *Client) ListRuns(ctx context.Context, pipeline string, opts ListRunsOptions) (Page[Run], error) {
	q := opts.values()
	set(q, "status", string(opts.Status))
	var p Page[Run]
	err := c.do(ctx, http.MethodGet, path("pipelines", pipeline, "runs"), q, nil, &p)
	return p, err
}

// GetRun returns a run with its stage and step tree.
func (c *Client) GetRun(ctx context.Context, id string) (Run, error) {
	var r Run
	err := c.do(ctx, http.MethodGet, path("runs", id), nil, nil, &r)
	return r, err
}

// CancelRun asks the server to cancel a run; a run that is done already is
// ErrConflict.
func (c *Client) CancelRun(ctx context.Context, id string) (Run, error) {
	var r Run
	err := c.do(ctx, http.MethodPost, path("runs", id, "cancel"), nil, nil, &r)
	return r, err
}

// Logs returns up to limit lines (0: the server's default) of a run's output
// after the cursor after (empty: from the start), in order: stage by stage,
// each stage's lines by sequence.
func (c *Client) Logs(ctx context.Context, runID, after string, limit int) (LogPage, error) {
	var p LogPage
	err := c.do(ctx, http.MethodGet, path("runs", runID, "logs"), logQuery(after, limit), nil, &p)
	return p, err
}

func logQuery(after string, limit int) url.Values {
	q := url.Values{}
	set(q, "after", after)
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	return q
}

// approvalRequest is the body of an approval or a rejection.
type approvalRequest struct {
	Comment string `json:"comment,omitempty"`
}

// Approve approves the stage of a run that waits for an approval.
func (c *Client) Approve(ctx context.Context, runID, stage, comment string) (Run, error) {
	var r Run
	err := c.do(ctx, http.MethodPost, path("runs", runID, "stages", stage, "approve"), nil, approvalRequest{comment}, &r)
	return r, err
}

// Reject rejects the stage of a run that waits for an approval.
func (c *Client) Reject(ctx context.Context, runID, stage, comment string) (Run, error) {
	var r Run
	err := c.do(ctx, http.MethodPost, path("runs", runID, "stages", stage, "reject"), nil, approvalRequest{comment}, &r)
	return r, err
}

// Polling intervals of FollowLogs and WaitRun: the first, and the longest it
// backs off to while nothing changes.
const (
	pollMin = 250 * time.Millisecond
	pollMax = time.Second
)

// FollowLogs calls fn with every line of a run's output, from the start, as
// it is written, until the run is done, and returns the run as it ended. It
// polls: it reads the run, then every new line, and waits 250 ms before the
// next round, backing off to 1 s while nothing new arrives. Since it reads
// the lines after it saw the run done, no line written before the run ended
// is missed. fn runs on the calling goroutine.
func (c *Client) FollowLogs(ctx context.Context, runID string, fn func(LogLine)) (Run, error) {
	after := ""
	wait := pollMin
	for {
		run, err := c.GetRun(ctx, runID)
		if err != nil {
			return run, err
		}
		n, next, err := c.drainLogs(ctx, runID, after, fn)
		if err != nil {
			return run, err
		}
		after = next
		if run.Status.Done() {
			return run, nil
		}
		if n > 0 {
			wait = pollMin
		} else {
			wait = min(2*wait, pollMax)
		}
		if err := sleep(ctx, wait); err != nil {
			return run, err
		}
	}
}

// drainLogs passes every line after the cursor to fn and returns how many
// there were and the cursor after the last.
func (c *Client) drainLogs(ctx context.Context, runID, after string, fn func(LogLine)) (int, string, error) {
	n := 0
	for {
		p, err := c.Logs(ctx, runID, after, 0)
		if err != nil {
			return n, after, err
		}
		for _, l := range p.Lines {
			fn(l)
		}
		n += len(p.Lines)
		if p.Next != "" {
			after = p.Next
		}
		if len(p.Lines) == 0 || p.Next == "" {
			return n, after, nil
		}
	}
}

// WaitRun polls a run until it is done, backing off from 250 ms to 1 s
// between reads, and returns it as it ended.
func (c *Client) WaitRun(ctx context.Context, id string) (Run, error) {
	wait := pollMin
	for {
		run, err := c.GetRun(ctx, id)
		if err != nil || run.Status.Done() {
			return run, err
		}
		if err := sleep(ctx, wait); err != nil {
			return run, err
		}
		wait = min(2*wait, pollMax)
	}
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}
