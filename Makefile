# meshvpn build, test and install. Most targets need root for the NAT lab
# (network namespaces, nftables, TUN): run them as root (sudo make test).

# Go lives in /usr/local/go on the project's machines; append it so a go
# already on PATH still wins.
export PATH := $(PATH):/usr/local/go/bin
GO      ?= go
PREFIX  ?= /usr/local
DESTDIR ?=
UNITDIR ?= /etc/systemd/system
# NAT kinds for make demo (laptop, server, nas): public fullcone restrictedcone
# portrestricted symmetric udpblocked
NAT1    ?= symmetric
NAT2    ?= restrictedcone
NAT3    ?= symmetric

.PHONY: all build deps vet lint test e2e bench bench-nat bench-mesh bench-mesh-sim bench-mesh-active bench-coordinator demo install clean

all: build

build:
	$(GO) build -o bin/meshvpn ./cmd/meshvpn
	$(GO) build -o bin/meshvpn-coordinator ./cmd/meshvpn-coordinator

deps:
	scripts/deps.sh

vet:
	$(GO) vet ./...

# staticcheck at a pinned version (built into bin/tools from the module
# proxy), and go.mod/go.sum exactly as go mod tidy would leave them.
STATICCHECK_VERSION ?= v0.8.2
lint:
	GOBIN=$(CURDIR)/bin/tools $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	bin/tools/staticcheck ./...
	@$(GO) mod tidy -diff || { echo "go.mod/go.sum are not tidy: run go mod tidy"; exit 1; }

# Unit tests, then the end-to-end tests in the NAT lab, then a summary line.
test: deps build vet lint
	GO=$(GO) scripts/test.sh

# Only the end-to-end tests.
e2e: build
	$(GO) test -count=1 -v -timeout 75m ./e2e/...

# Throughput of meshvpn vs stock wireguard-go over the same lab link, and
# the time for a new agent to become pingable. Reports, never fails on numbers.
bench: deps build
	$(GO) test -count=1 -v -run '^$$' -bench . -benchtime 1x -timeout 15m ./e2e/

# Direct paths by NAT pair: for every pair of NAT kinds (full cone,
# restricted, port-restricted, double NAT, symmetric, port-restricted
# behind an ISP hop) on both router variants, N cold starts (agents
# restarted, conntrack flushed); prints the share that ended direct and the
# median time to direct as a markdown table, also written to bench-nat.md.
# Never fails on numbers. make bench-nat [N=10] [WAN_DELAY=5ms]  (N defaults
# to 3 here; WAN_DELAY delays each site's internet link, natlab.SiteSpec)
WAN_DELAY ?=
bench-nat: deps build
	BENCH_NAT_N=$(if $(filter command line,$(origin N)),$(N),3) BENCH_NAT_OUT=$(CURDIR)/bench-nat.md \
		BENCH_NAT_WAN_DELAY=$(WAN_DELAY) \
		$(GO) test -count=1 -v -run '^$$' -bench '^BenchmarkNATPairs$$' -benchtime 1x -timeout 60m ./e2e/

# Mesh scale: N real agents (public lab hosts, or each behind its own NAT
# of kind NAT=fullcone|portrestricted|...) started at once; reports the time
# until every pinged pair is direct (all pairs up to 20 agents, a fixed
# sample above), agent RSS, coordinator sockets, log lines per agent and
# streams the coordinator closed, as a markdown table also written to
# bench-mesh.md. From 30 agents it raises the machine-wide neighbour-table
# limits for the run (LAB-NOTES) and restores them. Never fails on numbers.
# make bench-mesh [N=20] [NAT=public] [SETTLE=10s] [LAZY=auto]  (N defaults to 20 here;
# SETTLE: how long after all pinged pairs are direct RSS etc. are read;
# LAZY=on|off|auto: the agents' --lazy-peers, default auto)
NAT ?=
SETTLE ?=
LAZY ?=
bench-mesh: deps build
	BENCH_MESH_N=$(if $(filter command line,$(origin N)),$(N),20) BENCH_MESH_NAT=$(NAT) BENCH_MESH_SETTLE=$(SETTLE) BENCH_MESH_LAZY=$(LAZY) \
		BENCH_MESH_OUT=$(CURDIR)/bench-mesh.md \
		$(GO) test -count=1 -v -run '^$$' -bench '^BenchmarkMesh$$' -benchtime 1x -timeout 30m ./e2e/

# One real agent, the hub, with N working tunnels: N real peer agents on
# public lab hosts (default --lazy-peers auto), the hub with --lazy-peers
# off; it pings every peer, checks every path is direct, lets the tunnels
# idle SETTLE (30s) and reads its RSS, VmHWM, CPU and log lines over
# WINDOW (1m), one peer's alongside. Writes bench-mesh-active.md; never
# fails on numbers. make bench-mesh-active [N=100] [SETTLE=30s] [WINDOW=1m]
WINDOW ?=
bench-mesh-active: deps build
	BENCH_MESH_ACTIVE_N=$(if $(filter command line,$(origin N)),$(N),100) BENCH_MESH_ACTIVE_SETTLE=$(SETTLE) BENCH_MESH_ACTIVE_WINDOW=$(WINDOW) \
		BENCH_MESH_ACTIVE_OUT=$(CURDIR)/bench-mesh-active.md \
		$(GO) test -count=1 -v -run '^$$' -bench '^BenchmarkMeshActive$$' -benchtime 1x -timeout 30m ./e2e/

# One real agent among SIM simulated nodes (internal/loadgen; they hold
# streams but never answer ICE): its RSS, CPU and log lines idle, then
# after `status --peer` wakes WAKE of them. Writes bench-mesh-sim.md;
# never fails on numbers.
# make bench-mesh-sim [SIM=1000] [WAKE=50] [LAZY=auto]
SIM ?= 1000
WAKE ?= 50
bench-mesh-sim: deps build
	BENCH_MESH_SIM_N=$(SIM) BENCH_MESH_SIM_WAKE=$(WAKE) BENCH_MESH_LAZY=$(LAZY) \
		BENCH_MESH_SIM_OUT=$(CURDIR)/bench-mesh-sim.md \
		$(GO) test -count=1 -v -run '^$$' -bench '^BenchmarkMeshSim$$' -benchtime 1x -timeout 30m ./e2e/

# Coordinator scale: N simulated agents (register, hold streams; no TUN, no
# WireGuard) against the real coordinator on 127.0.0.1. Reports RSS, CPU,
# propagation p50/p99 and netmap size; never fails on numbers.
# make bench-coordinator N=10000 [POLICY=1] [REPLICAS=2 STORE=postgres [FIRST=10000]]
# (POLICY=1: under an access policy of 50 groups and 500 rules, and time a
# policy change; REPLICAS: coordinators on one PostgreSQL store, agents
# spread over them; FIRST: that many agents on replica 0, the one the
# storms restart, the rest on the others)
N ?= 1000
POLICY ?=
REPLICAS ?= 1
STORE ?=
FIRST ?=
bench-coordinator: build
	$(GO) run ./internal/loadgen/cmd -coordinator bin/meshvpn-coordinator -n $(N) $(if $(POLICY),-policy) -replicas $(REPLICAS) $(if $(STORE),-store $(STORE)) $(if $(FIRST),-first $(FIRST))

demo: deps build
	$(GO) run ./internal/demo -nat1 $(NAT1) -nat2 $(NAT2) -nat3 $(NAT3)

install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(UNITDIR) $(DESTDIR)/etc/meshvpn
	install -m 0755 bin/meshvpn bin/meshvpn-coordinator $(DESTDIR)$(PREFIX)/bin/
	install -m 0644 configs/meshvpn.service configs/meshvpn-coordinator.service $(DESTDIR)$(UNITDIR)/
	install -m 0644 configs/meshvpn.env.example configs/meshvpn-coordinator.env.example $(DESTDIR)/etc/meshvpn/
	@echo "installed; copy /etc/meshvpn/*.env.example to *.env, edit, then:"
	@echo "  systemctl daemon-reload && systemctl enable --now meshvpn-coordinator   # on the coordinator"
	@echo "  systemctl daemon-reload && systemctl enable --now meshvpn               # on every node"

clean:
	rm -rf bin
	$(GO) clean -testcache
