package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/internal/meshlab"
	"github.com/meshvpn/meshvpn/internal/natlab"
)

// TestTakeoverRefused has a member who holds a fresh auth key register
// with a victim's public key (every member sees every key in its netmap),
// from a plain HTTP client on a lab host. Without the victim's private key
// it cannot prove possession, so the coordinator refuses with 409 and no
// credential, and the victim stays connected and reachable.
func TestTakeoverRefused(t *testing.T) {
	lab, coord := newLab(t)
	ctx := t.Context()
	victim := addSiteAgent(t, lab, coord, "victim", natlab.FullCone)
	peer := addSiteAgent(t, lab, coord, "peer", natlab.PortRestricted)
	startOnline(t, authKey(t, coord, true), victim, peer)
	ipVictim := overlayIP(t, victim)
	if out, err := pingUntil(ctx, peer, ipVictim, 40*time.Second); err != nil {
		t.Fatalf("peer -> victim before the attack: %v\n%s", err, out)
	}
	victimKey := status(t, victim).Self.PublicKey
	if p := status(t, peer).Peer("victim"); p == nil {
		t.Fatal("peer does not list the victim")
	}

	attacker, err := lab.AddPublicHost("attacker", "203.0.113.66")
	if err != nil {
		t.Fatal(err)
	}
	post := func(name string, req map[string]string) (int, string) {
		body, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(lab.Dir, name+".json")
		if err := os.WriteFile(file, body, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := attacker.Run(ctx, "curl", "-sS", "--max-time", "10", "-X", "POST",
			"-H", "Content-Type: application/json", "--data-binary", "@"+file,
			"-w", "\n%{http_code}", coord.URL+control.PathRegister)
		if err != nil {
			t.Fatalf("curl: %v\n%s", err, out)
		}
		i := strings.LastIndexByte(out, '\n')
		var code int
		fmt.Sscan(out[i+1:], &code)
		return code, strings.TrimSpace(out[:i])
	}
	expectRefused := func(what string, code int, body string) {
		t.Helper()
		t.Logf("%s: HTTP %d %s", what, code, body)
		if code != 409 || strings.Contains(body, `"credential"`) {
			t.Errorf("%s: HTTP %d %s; want 409 and no credential", what, code, body)
		}
	}

	// Plain takeover: the victim's key, the attacker's own fresh key.
	code, body := post("plain", map[string]string{
		"auth_key": authKey(t, coord, false), "hostname": "evil", "public_key": victimKey})
	expectRefused("takeover without proof", code, body)

	// The same key in another base64 spelling: the last character carries
	// two padding bits that decoders ignore by default.
	alias := []byte(victimKey)
	alias[42]++ // a spare bit: same key to a lenient decoder
	code, body = post("alias", map[string]string{
		"auth_key": authKey(t, coord, false), "hostname": "evil", "public_key": string(alias)})
	t.Logf("takeover with the key spelt %s: HTTP %d %s", alias, code, body)
	if code != 400 || strings.Contains(body, `"credential"`) {
		t.Errorf("takeover with the key spelt %s: HTTP %d %s; want 400 and no credential", alias, code, body)
	}

	// With a fresh challenge and a made-up proof.
	out, err := attacker.Run(ctx, "curl", "-sS", "--max-time", "10", coord.URL+control.PathChallenge)
	if err != nil {
		t.Fatalf("fetch challenge: %v\n%s", err, out)
	}
	var ch control.Challenge
	if err := json.Unmarshal([]byte(out), &ch); err != nil || ch.Challenge == "" {
		t.Fatalf("challenge answer %q: %v", out, err)
	}
	code, body = post("forged", map[string]string{
		"auth_key": authKey(t, coord, false), "hostname": "evil", "public_key": victimKey,
		"challenge": ch.Challenge, "proof": strings.Repeat("A", 43) + "="})
	if code != 401 {
		expectRefused("takeover with a forged proof", code, body)
	} else {
		t.Logf("takeover with a forged proof: HTTP %d %s", code, body)
	}

	// The victim noticed nothing: its stream stays up, the peer still
	// reaches it, and the coordinator still has it under its own name.
	time.Sleep(3 * time.Second)
	st := status(t, victim)
	if !st.Coordinator.Connected || st.Coordinator.LastError != "" {
		t.Errorf("victim after the attempts: connected=%v last error %q", st.Coordinator.Connected, st.Coordinator.LastError)
	}
	for _, bad := range []string{"coordinator refused", "coordinator stream lost"} {
		if strings.Contains(victim.Proc.Log(), bad) {
			t.Errorf("victim's log says %q:\n%s", bad, victim.Proc.Log())
		}
	}
	if out, err := meshlab.PingIP(ctx, peer, ipVictim, 2); err != nil {
		t.Errorf("peer -> victim after the attempts: %v\n%s", err, out)
	}
	if p := status(t, peer).Peer("victim"); p == nil || p.PublicKey != victimKey {
		t.Errorf("peer's view of the victim after the attempts: %+v", p)
	}
	if names := nodeNames(t, coord); len(names) != 2 {
		t.Errorf("nodes after the attempts: %q, want victim and peer only", names)
	}
}
