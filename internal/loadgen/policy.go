package loadgen

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Shape of the policy a -policy run installs.
const (
	policyGroups = 50
	policyRules  = 500
	policyTags   = 10
)

// syntheticPolicy writes a policy of 50 groups and 500 rules over agents
// sim-0..sim-(n-1) and tags t0..t9, plus a rule that lets every agent see
// the probe node (tag "probe"), so join and removal still reach all N.
// variant changes every rule's ports, for a policy change that touches
// every node's filter.
func syntheticPolicy(n, variant int) string {
	var b strings.Builder
	b.WriteString("{\n  \"groups\": {\n")
	for g := range policyGroups {
		fmt.Fprintf(&b, "    \"group:g%d\": [\"tag:t%d\", \"sim-%d\", \"sim-%d\"],\n", g, g%policyTags, (g*7)%n, (g*13+1)%n)
	}
	b.WriteString("  },\n  \"acls\": [\n")
	b.WriteString("    {\"action\": \"accept\", \"src\": [\"*\"], \"proto\": \"icmp\", \"dst\": [\"tag:probe:*\"]},\n")
	for r := range policyRules - 1 {
		fmt.Fprintf(&b, "    {\"action\": \"accept\", \"src\": [\"group:g%d\", \"sim-%d\"], \"dst\": [\"tag:t%d:%d\", \"group:g%d:1000-2000\", \"sim-%d:*\"]},\n",
			r%policyGroups, (r*31)%n, r%policyTags, 22+variant, (r+1)%policyGroups, (r*17)%n)
	}
	b.WriteString("  ],\n}\n")
	return b.String()
}

// setPolicy runs `policy set` as an operator would and returns how long
// the command took.
func (g *run) setPolicy(ctx context.Context, variant int) (time.Duration, error) {
	path := filepath.Join(g.state, fmt.Sprintf("policy-%d.hujson", variant))
	if err := os.WriteFile(path, []byte(syntheticPolicy(g.cfg.N, variant)), 0o600); err != nil {
		return 0, fmt.Errorf("loadgen: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, g.cfg.Coordinator, "policy", "set", path, "--state", g.reps[0].dir)
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("loadgen: policy set: %v: %s", err, strings.TrimSpace(out.String()))
	}
	return time.Since(start), nil
}
