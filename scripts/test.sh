#!/usr/bin/env bash
# Runs the unit tests, then the end-to-end tests (after the unit tests, so
# the NAT lab's timing-sensitive runs do not share two cores with them),
# verbosely so a CI log shows every test and each NAT pair's result, and
# ends with a "N passed, M failed, K skipped" line counted from the
# --- PASS/FAIL/SKIP lines (subtests included).
#
# Without root the lab cannot be built and every e2e test skips itself; that
# is a FAILED run unless ALLOW_NO_E2E=1 asks for unit tests only (it still
# says plainly that the end-to-end tests did not run).
set -uo pipefail

GO=${GO:-go}
log=$(mktemp /tmp/meshvpn-test.XXXXXX.log)
e2elog=$(mktemp /tmp/meshvpn-e2e.XXXXXX.log)
trap 'rm -f "$log" "$e2elog"' EXIT

mapfile -t unit < <($GO list ./... | grep -v '/e2e$')
status=0

echo "== unit tests: ${#unit[@]} packages"
$GO test -count=1 -v -timeout 10m "${unit[@]}" 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== end-to-end tests (NAT lab; needs root, bin/ from make build)"
$GO test -count=1 -v -timeout 75m ./e2e/... 2>&1 | tee "$e2elog"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
cat "$e2elog" >>"$log"
# natlab.Require skips a test with "natlab: ...; run sudo make test" when
# the lab cannot be built (every lab writes other "natlab: " lines, so match
# the skip's own ending).
e2e_ran=$(grep -cE '^\s*--- (PASS|FAIL)' "$e2elog")
e2e_nolab=$(grep -cE '^\s+\S+\.go:[0-9]+: natlab: .*; run sudo make test$' "$e2elog")

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
if [ "$e2e_nolab" -gt 0 ]; then
	echo "== END-TO-END TESTS DID NOT RUN: $e2e_nolab skipped without a NAT lab ($e2e_ran ran); reason:"
	grep -m1 -oE 'natlab: .*; run sudo make test$' "$e2elog" | sed 's/^/   /'
	if [ "${ALLOW_NO_E2E:-0}" != 1 ]; then
		echo "   (run as root, or set ALLOW_NO_E2E=1 to accept a unit-test-only run)"
		status=1
	fi
fi
if [ "$status" -eq 0 ]; then
	echo "== result: OK"
else
	echo "== result: FAILED"
fi
# Last line, in the plain form CI reads: "word: N passed, N failed, N skipped".
echo "tests: $passed passed, $failed failed, $skipped skipped"
exit "$status"
