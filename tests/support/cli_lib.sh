# Shared by the tests/cli_*.sh scripts: source it, then `cli_setup "$@"`.
# cli_setup: $1 is the nnz binary; sets NNZ (absolute) and T (a temp dir, removed at
# exit, the working directory from then on).
cli_setup() {
    NNZ=$(realpath "${1:?usage: $(basename "$0") path/to/nnz}")
    T=$(mktemp -d "${TMPDIR:-/tmp}/nnz-$(basename "$0" .sh)-XXXXXX")
    trap 'rm -rf "$T"' EXIT
    cd "$T" || exit 1
}
fail() { echo "FAIL: $*"; echo "--- stdout"; cat "$T/out" 2>/dev/null; echo "--- stderr"; cat "$T/err" 2>/dev/null; exit 1; }
# expect CODE cmd...: runs cmd, output in $T/out and $T/err, checks the exit code.
expect() {
    local code=$1; shift
    "$@" >"$T/out" 2>"$T/err"
    local rc=$?
    [ "$rc" -eq "$code" ] || fail "expected exit $code, got $rc: $*"
}
has() { grep -q -e "$2" "$1" || fail "'$2' not in $1"; }
lacks() { ! grep -q -e "$2" "$1" || fail "'$2' unexpectedly in $1"; }
# no temporary file (an atomic write's *.tmp.*) left in $T
no_temp() { ls -A "$T" | grep -q '\.tmp' && fail "temporary file left behind"; true; }
