// Package e2e holds meshvpn's end-to-end tests: the built binaries
// (`make build`) run as real processes in a natlab NAT lab, with real TUN
// devices, nftables NAT, sshd and iperf3. They need root and skip without it.
//
//	go test -count=1 -v ./e2e/                       # tests
//	go test -count=1 -v -run '^$' -bench . -benchtime 1x ./e2e/   # make bench
package e2e
