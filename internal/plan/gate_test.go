package plan

import (
	"testing"

	"github.com/oxide-ci/oxide/internal/pipeline"
)

func TestGate(t *testing.T) {
	t.Parallel()
	failed := &Node{Name: "build"}
	values := map[string]any{"branch": "main"}
	tests := []struct {
		name      string
		cond      *pipeline.Condition
		approval  bool
		failedDep *Node
		want      Verdict
	}{
		{"no condition", nil, false, nil, Start},
		{"no condition after a failure", nil, false, failed, SkipFailed},
		{"true condition", &pipeline.Condition{If: "branch == 'main'"}, false, nil, Start},
		{"false condition", &pipeline.Condition{If: "branch == 'dev'"}, false, nil, Skip},
		{"true condition after a failure", &pipeline.Condition{If: "branch == 'main'"}, false, failed, SkipFailed},
		{"always() after a failure", &pipeline.Condition{If: "always()"}, false, failed, Start},
		{"failure() after a failure", &pipeline.Condition{If: "failure()"}, false, failed, Start},
		{"failure() without one", &pipeline.Condition{If: "failure()"}, false, nil, Skip},
		{"unless true", &pipeline.Condition{Unless: "branch == 'main'"}, false, nil, Skip},
		{"unless false", &pipeline.Condition{Unless: "branch == 'dev'"}, false, nil, Start},
		{"bad expression", &pipeline.Condition{If: "fromJSON('{')"}, false, nil, Fail},
		{"approval", nil, true, nil, AwaitApproval},
		{"approval after a failure", nil, true, failed, SkipFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := &pipeline.Stage{Name: "deploy", Condition: tt.cond}
			if tt.approval {
				s.Approval = &pipeline.Approval{Required: true}
			}
			d := Gate(&Node{Name: "deploy", Stage: s}, tt.failedDep, values, "")
			if d.Verdict != tt.want {
				t.Errorf("verdict %d (%s), want %d", d.Verdict, d.Reason, tt.want)
			}
			if d.Verdict != Start && d.Reason == "" {
				t.Error("no reason given")
			}
		})
	}
}
