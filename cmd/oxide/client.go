package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/oxide-ci/oxide/sdk"
)

// newClient returns a client of the configured server; server, when set,
// overrides the configured one.
func newClient(server string) (*sdk.Client, error) {
	s, err := resolveSettings()
	if err != nil {
		return nil, &exitError{code: exitFailure, err: err}
	}
	if server != "" {
		s.Server = server
	}
	if s.Server == "" {
		return nil, usageError("no server configured: run `oxide login --server URL --token TOKEN`, or set %s and %s", envServer, envToken)
	}
	if !strings.HasPrefix(s.Server, "http://") && !strings.HasPrefix(s.Server, "https://") {
		return nil, usageError("server %q: want an http:// or https:// URL", s.Server)
	}
	return sdk.New(s.Server, s.Token), nil
}

// signalContext is cmd's context, cancelled by SIGINT or SIGTERM.
func signalContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
}

// apiError turns an error of a client call into an exit status and a
// message: 2 for a definition the server finds invalid (as for a local run),
// else 1, with a hint for a missing or rejected token.
func apiError(err error) error {
	if err == nil {
		return nil
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return err
	}
	var ae *sdk.Error
	if errors.As(err, &ae) {
		switch {
		case ae.Code == "invalid_pipeline":
			return &exitError{code: exitUsage, err: err}
		case ae.Status == 401:
			return &exitError{code: exitFailure, err: fmt.Errorf("%w\nlog in with `oxide login --server URL --token TOKEN`, or set %s", err, envToken)}
		}
	}
	if errors.Is(err, context.Canceled) {
		return &exitError{code: exitInterrupted, err: errors.New("interrupted")}
	}
	return &exitError{code: exitFailure, err: err}
}

// outputFlag adds -o/--output: text (tables) or json.
func outputFlag(cmd *cobra.Command, o *string) {
	cmd.Flags().StringVarP(o, "output", "o", "text", "output format: text or json")
}

func checkOutput(o string) error {
	if o != "text" && o != "json" {
		return usageError("--output must be text or json, not %q", o)
	}
	return nil
}

// writeJSON writes v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// table writes aligned columns: a header row, then rows.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cells ...string) {
	for i, c := range cells {
		if c == "" {
			cells[i] = "-"
		}
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// listFlags are the paging flags of list commands.
type listFlags struct {
	limit int
	all   bool
}

func (f *listFlags) add(cmd *cobra.Command) {
	cmd.Flags().IntVar(&f.limit, "limit", 50, "list at most `N` items (at most 500)")
	cmd.Flags().BoolVar(&f.all, "all", false, "list every item, page by page")
}

// listItems returns the first page, or every page with --all; on stderr it says
// when more items remain.
func listItems[T any](ctx context.Context, cmd *cobra.Command, f listFlags, page func(context.Context, sdk.ListOptions) (sdk.Page[T], error)) ([]T, error) {
	if f.limit < 1 || f.limit > 500 {
		return nil, usageError("--limit must be between 1 and 500")
	}
	if f.all {
		return sdk.All(ctx, func(ctx context.Context, cursor string) (sdk.Page[T], error) {
			return page(ctx, sdk.ListOptions{Cursor: cursor, Limit: 500})
		})
	}
	p, err := page(ctx, sdk.ListOptions{Limit: f.limit})
	if err == nil && p.Next != "" {
		fmt.Fprintf(cmd.ErrOrStderr(), "oxide: more than %d; --all lists every one\n", len(p.Items))
	}
	return p.Items, err
}

// printList prints items as JSON or as a table.
func printList[T any](w io.Writer, output string, items []T, header []string, row func(T) []string) error {
	if output == "json" {
		if items == nil {
			items = []T{}
		}
		return writeJSON(w, items)
	}
	t := newTable(w, header...)
	for _, it := range items {
		t.row(row(it)...)
	}
	return t.flush()
}

// printFields prints name: value lines, aligned.
func printFields(w io.Writer, kv ...string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for i := 0; i+1 < len(kv); i += 2 {
		v := kv[i+1]
		if v == "" {
			v = "-"
		}
		fmt.Fprintf(tw, "%s:\t%s\n", kv[i], v)
	}
	return tw.Flush()
}

// ago is how long ago t was, for people: 45s, 3m, 5h, 2d.
func ago(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", max(int(d.Seconds()), 0))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// agoPtr is ago of an optional time.
func agoPtr(t *time.Time) string {
	if t == nil {
		return ""
	}
	return ago(*t)
}

// stamp formats a time for people, in UTC as the API answers.
func stamp(t *time.Time) string {
	if t == nil || t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// elapsed is how long something ran from start to end (now, if it goes on).
func elapsed(start, end *time.Time) string {
	if start == nil {
		return ""
	}
	stop := time.Now()
	if end != nil {
		stop = *end
	}
	return duration(stop.Sub(*start))
}

// duration rounds d for people: 12ms, 1.2s, 3m4s.
func duration(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// mark is the one-character sign of a status.
func mark(status string) string {
	switch status {
	case "success", "succeeded":
		return "✓"
	case "failure", "failed", "timeout":
		return "✗"
	case "cancelled":
		return "⊘"
	case "running", "assigned":
		return "▶"
	case "waiting":
		return "…"
	}
	return "-"
}
