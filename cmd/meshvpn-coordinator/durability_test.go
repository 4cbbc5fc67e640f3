package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshvpn/meshvpn/control"
	"github.com/meshvpn/meshvpn/coordinator"
)

// childEnv makes the test binary act as meshvpn-coordinator, so a test can
// run the real command in a process of its own and kill it.
const childEnv = "MESHVPN_COORDINATOR_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// ackedNode is a registration the server answered 200 to.
type ackedNode struct {
	id         uint64
	publicKey  string
	credential string
}

// TestStoreSurvivesSIGKILL runs `serve` in a child process, keeps it busy
// with registrations (server writes), removals through the admin socket and
// auth key creations from this process (a second writer), kills it with
// SIGKILL in the middle, and checks that the store reopens intact with every
// acknowledged write in it.
func TestStoreSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a coordinator process")
	}
	dir := t.TempDir()
	st, err := coordinator.OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	key, err := st.CreateAuthKey(t.Context(), true, 0)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()

	// Registrations at full speed with one key: no join limit.
	cmd := exec.Command(os.Args[0], "serve", "--listen", "127.0.0.1:0", "--stun-listen", "", "--turn-listen", "127.0.0.1:0", "--state", dir, "--join-burst", "-1")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	base, err := waitListening(stderr, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}

	var (
		mu      sync.Mutex
		nodes   []ackedNode
		removed []ackedNode
		tried   = map[uint64]bool{} // removals sent, acknowledged or not
		keys    []int64
	)
	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			for ctx.Err() == nil {
				n, err := registerOne(ctx, base, key.Key)
				if err != nil {
					continue // the kill, or a request cut short by it
				}
				mu.Lock()
				nodes = append(nodes, n)
				mu.Unlock()
			}
		})
	}
	wg.Go(func() {
		admin, err := coordinator.OpenAdmin(ctx, dir)
		if err != nil {
			return
		}
		defer admin.Close()
		for i := 0; ctx.Err() == nil; i++ {
			mu.Lock()
			var n ackedNode
			ok := i*3 < len(nodes)
			if ok {
				n = nodes[i*3]
				tried[n.id] = true
			}
			mu.Unlock()
			if !ok {
				time.Sleep(5 * time.Millisecond)
				i--
				continue
			}
			if _, err := admin.RemoveNode(ctx, strconv.FormatUint(n.id, 10)); err != nil {
				continue
			}
			mu.Lock()
			removed = append(removed, n)
			mu.Unlock()
		}
	})
	wg.Go(func() {
		for ctx.Err() == nil {
			var out bytes.Buffer
			if run([]string{"authkey", "create", "--json", "--state", dir}, &out, &bytes.Buffer{}) != 0 {
				continue
			}
			var k struct {
				ID int64 `json:"id"`
			}
			if json.Unmarshal(out.Bytes(), &k) == nil {
				mu.Lock()
				keys = append(keys, k.ID)
				mu.Unlock()
			}
		}
	})

	// Kill once plenty of writes are acknowledged, with more in flight.
	deadline := time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		n, r := len(nodes), len(removed)
		mu.Unlock()
		if n >= 1000 && r >= 100 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d registrations and %d removals acknowledged in 60s", n, r)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	stop()
	wg.Wait()
	t.Logf("killed the coordinator after %d acknowledged registrations, %d removals, %d auth keys", len(nodes), len(removed), len(keys))

	st, err = coordinator.OpenStore(dir)
	if err != nil {
		t.Fatalf("store does not reopen after SIGKILL: %v", err)
	}
	defer st.Close()
	ctx2 := context.Background()
	if err := st.IntegrityCheck(ctx2); err != nil {
		t.Fatal(err)
	}
	gone := map[uint64]bool{}
	for _, n := range removed {
		gone[n.id] = true
		if _, err := st.AuthenticateNode(ctx2, n.credential); !errors.Is(err, coordinator.ErrNodeRemoved) {
			t.Errorf("acknowledged removal of node %d lost: authenticate says %v", n.id, err)
		}
	}
	for _, n := range nodes {
		if gone[n.id] {
			continue
		}
		got, err := st.AuthenticateNode(ctx2, n.credential)
		if tried[n.id] && errors.Is(err, coordinator.ErrNodeRemoved) {
			continue // a removal the kill cut off before its answer, but after its commit
		}
		if err != nil || got.PublicKey != n.publicKey {
			t.Errorf("acknowledged registration of node %d lost: %v", n.id, err)
		}
	}
	all, err := st.ListAuthKeys(ctx2)
	if err != nil {
		t.Fatal(err)
	}
	have := map[int64]bool{}
	for _, k := range all {
		have[k.ID] = true
	}
	for _, id := range keys {
		if !have[id] {
			t.Errorf("acknowledged auth key %d lost", id)
		}
	}
	// A server starts on it again (the lock died with the process, the
	// stale admin socket is replaced).
	st.Close()
	srv, err := coordinator.New(coordinator.Config{Listen: "127.0.0.1:0", StateDir: dir})
	if err != nil {
		t.Fatalf("restart after SIGKILL: %v", err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatalf("listen after SIGKILL: %v", err)
	}
	srv.Close()
}

var listeningRE = regexp.MustCompile(`api=(http://[0-9.:]+)`)

// waitListening reads the child's log until it says where it listens, then
// keeps draining it so the child never blocks on a full pipe.
func waitListening(r interface{ Read([]byte) (int, error) }, timeout time.Duration) (string, error) {
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if m := listeningRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
	}()
	select {
	case base := <-found:
		return base, nil
	case <-time.After(timeout):
		return "", errors.New("coordinator did not report its address")
	}
}

func registerOne(ctx context.Context, base, key string) (ackedNode, error) {
	var b [32]byte
	rand.Read(b[:])
	pub := base64.StdEncoding.EncodeToString(b[:])
	body, _ := json.Marshal(control.RegisterRequest{AuthKey: key, Hostname: "n", PublicKey: pub})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+control.PathRegister, bytes.NewReader(body))
	if err != nil {
		return ackedNode{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ackedNode{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ackedNode{}, errors.New(resp.Status)
	}
	var r control.RegisterResponse
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return ackedNode{}, err
	}
	return ackedNode{id: r.NodeID, publicKey: pub, credential: r.Credential}, nil
}
