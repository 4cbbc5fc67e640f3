#!/usr/bin/env bash
# Runs the unit tests, then the end-to-end tests (after the unit tests, so
# the NAT lab's timing-sensitive runs do not share two cores with them),
# verbosely so a CI log shows every test and each NAT pair's result, and
# ends with a "N passed, M failed, K skipped" line counted from the
# --- PASS/FAIL/SKIP lines (subtests included).
set -uo pipefail

GO=${GO:-go}
log=$(mktemp /tmp/meshvpn-test.XXXXXX.log)
trap 'rm -f "$log"' EXIT

mapfile -t unit < <($GO list ./... | grep -v '/e2e$')
status=0

echo "== unit tests: ${#unit[@]} packages"
$GO test -count=1 -v -timeout 10m "${unit[@]}" 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== end-to-end tests (NAT lab; needs root, bin/ from make build)"
$GO test -count=1 -v -timeout 20m ./e2e/... 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

passed=$(grep -cE '^\s*--- PASS' "$log")
failed=$(grep -cE '^\s*--- FAIL' "$log")
skipped=$(grep -cE '^\s*--- SKIP' "$log")
# A package that fails to build, panics or times out has no --- FAIL line.
broken=$(grep -cE '^(FAIL\s+\S+\s+\[|panic:|\*\*\* Test killed)' "$log")

echo
echo "== failed tests:"
grep -E '^\s*--- FAIL' "$log" | sed 's/^\s*/   /' || echo "   none"
echo "== skipped tests:"
grep -E '^\s*--- SKIP' "$log" | sed 's/^\s*/   /' || echo "   none"
echo
if [ "$broken" -gt 0 ]; then
	echo "== $broken package(s) failed to build or crashed"
	status=1
fi
if [ "$status" -eq 0 ]; then
	echo "== result: OK"
else
	echo "== result: FAILED"
fi
# Last line, in the plain form CI reads: "word: N passed, N failed, N skipped".
echo "tests: $passed passed, $failed failed, $skipped skipped"
exit "$status"
