#!/usr/bin/env bash
# nnz report: the per-layer sparsity chart of a GMP checkpoint and the accuracy-vs-sparsity
# curves of a results file are well-formed SVG (parsed back with Python's xml.etree): one
# bar per conv/linear layer with its height the layer's printed zeros, one polyline per
# method and model through its points in sparsity order, every coordinate inside the viewBox;
# bad inputs exit 2 (usage) or 1 (unreadable or malformed file, unwritable picture) and leave
# no picture. $1 = nnz.
set -u
. "$(dirname "$0")/support/cli_lib.sh"
cli_setup "$@"
PY=/usr/bin/python3
[ -x "$PY" ] || fail "needs $PY (Debian package python3) to parse the SVG"

# check_svg FILE KIND [ARGS]: parses FILE and checks it; prints what it found
cat >"$T/check.py" <<'EOF'
import sys, re, xml.etree.ElementTree as ET
path, kind = sys.argv[1], sys.argv[2]
ns = "{http://www.w3.org/2000/svg}"
root = ET.parse(path).getroot()
assert root.tag == ns + "svg", root.tag
vb = [float(v) for v in root.get("viewBox").split()]
assert vb[0] == 0 and vb[1] == 0 and vb[2] > 0 and vb[3] > 0, vb
W, H = vb[2], vb[3]
def inside(x, y):
    assert -1e-6 <= x <= W + 1e-6 and -1e-6 <= y <= H + 1e-6, (x, y, W, H)
for e in root.iter():
    for a in ("x", "x1", "x2", "cx"):
        if e.get(a) is not None: inside(float(e.get(a)), 0)
    for a in ("y", "y1", "y2", "cy"):
        if e.get(a) is not None: inside(0, float(e.get(a)))
    if e.tag == ns + "rect":
        w, h = float(e.get("width")), float(e.get("height"))
        assert w >= 0 and h >= 0, (w, h)
        inside(float(e.get("x")) + w, float(e.get("y")) + h)
if kind == "layers":
    # expected: zeros per layer as fractions, in graph order
    want = [float(z) for z in sys.argv[3].split(",")]
    bars = [e for e in root.iter(ns + "rect") if e.get("class") == "sparsity"]
    flops = [e for e in root.iter(ns + "rect") if e.get("class") == "flops"]
    assert len(bars) == len(want), ("bars", len(bars), "layers", len(want))
    assert len(flops) == len(want), ("flop bars", len(flops))
    assert [int(b.get("data-layer")) for b in bars] == list(range(len(want)))
    # the axis: the grid line labelled 0% and the one labelled 100%
    grid = sorted(float(e.get("y1")) for e in root.iter(ns + "line") if e.get("class") == "grid")
    top, base = grid[0], grid[-1]
    xs = []
    for b, z in zip(bars, want):
        y, h = float(b.get("y")), float(b.get("height"))
        assert abs(y + h - base) < 0.01, ("bar not on the axis", y, h, base)
        assert abs(h / (base - top) - z) < 0.0002, ("bar height", h / (base - top), "zeros", z)
        xs.append(float(b.get("x")))
    assert xs == sorted(xs) and len(set(xs)) == len(xs), xs
    # the FLOP bars: shares of the whole model's FLOPs (other layers have some too)
    share = sum(float(f.get("height")) for f in flops) / (base - top)
    assert 0.5 < share <= 1.0 + 1e-3, ("FLOP shares sum to", share)
    for pair in sys.argv[4:]:  # "LAYER_INDEX:SHARE"
        i, s = pair.split(":")
        got = float(flops[int(i)].get("height")) / (base - top)
        assert abs(got - float(s)) < 0.0002, ("FLOP share of layer", i, got, s)
    print("bars", len(bars))
else:
    # expected: "method/model:n" per series
    want = dict(s.rsplit(":", 1) for s in sys.argv[3].split(","))
    lines = [e for e in root.iter(ns + "polyline") if e.get("class") == "series"]
    got = {}
    for l in lines:
        pts = [tuple(map(float, p.split(","))) for p in l.get("points").split()]
        for x, y in pts: inside(x, y)
        assert [x for x, _ in pts] == sorted(x for x, _ in pts), "points not in sparsity order"
        got[l.get("data-method") + "/" + l.get("data-model")] = str(len(pts))
    assert got == want, (got, want)
    circles = [e for e in root.iter(ns + "circle") if e.get("class") == "point"]
    assert len(circles) == sum(int(v) for v in want.values()), len(circles)
    print("series", len(lines))
EOF
check_svg() { "$PY" "$T/check.py" "$@" >"$T/check" 2>&1 || { cat "$T/check"; fail "bad SVG $1"; }; }

expect 0 "$NNZ" report --help
has out "--results"; has out "--out"; has out "method, model"; has out "default: the input's name with .svg"
expect 0 "$NNZ" --help
has out "report"

# a GMP checkpoint: conv2 and fc1 exactly 80% zeros, conv1 and fc2 dense
expect 0 "$NNZ" train --model lenet5 --train-limit 256 --test-limit 64 --epochs 1 --batch 64 --threads 2 \
    --prune gmp --target-sparsity 0.8 --out gmp.safetensors
expect 0 "$NNZ" report gmp.safetensors
[ -f gmp.svg ] || fail "no gmp.svg (the default name)"
has out "^conv2 *80.00%"; has out "^fc1 *80.00%"; has out "^conv1 *0.00%.*not pruned"; has out "wrote gmp.svg (4 layers)"
# conv2: 20070400 of lenet5's 24546304 forward FLOPs, fc1 3211264
check_svg gmp.svg layers 0,0.8,0.8,0 1:0.817655 2:0.130825
# a zoo model with many layers (fresh: no zeros), named output and title with XML specials
expect 0 "$NNZ" report mbv2-tiny --out mb.svg --title 'mbv2 <tiny> & "fresh"'
n=$(grep -c "^wrote mb.svg (" out); [ "$n" = 1 ] || fail "no summary line"
layers=$(sed -n 's/^wrote mb.svg (\([0-9]*\) layers)$/\1/p' out)
[ "$layers" -gt 20 ] || fail "mbv2-tiny has only '$layers' conv/linear layers?"
check_svg mb.svg layers "$(printf '0%.0s,' $(seq 1 "$layers") | sed 's/,$//')"
has mb.svg "mbv2 &lt;tiny&gt; &amp; &quot;fresh&quot;"

# curves: three series (one with a single point), columns in another order, extra columns, comments
cat >res.csv <<'EOF'
# written by hand
accuracy,sparsity,model,method,epochs

0.881,0.5,lenet5,autosparse,1
0.850,0.9,lenet5,autosparse,1
0.870,0.7,lenet5,autosparse,1
0.872 , 0.52 , lenet5 , gmp , 1
0.80,0.95,lenet5,gmp,1
0.9,0.6,vgg8,str,1
EOF
expect 0 "$NNZ" report --results res.csv --out curves.svg
has out "wrote curves.svg (3 curves, 6 results)"; has out "^autosparse *lenet5 *3  *50.. 90%  *85.0..88.1%"
check_svg curves.svg curves "autosparse/lenet5:3,gmp/lenet5:2,str/vgg8:1"
cp curves.svg keep.svg
# a short title keeps the 15-point font; one too long for the 820-pixel canvas gets a smaller one
has curves.svg '<text x="410.0" y="24.0" text-anchor="middle" font-size="15.0">'
long=$(printf 'a long title, %.0s' $(seq 1 12))
expect 0 "$NNZ" report --results res.csv --out long.svg --title "$long"
font=$(sed -n 's/.*y="24.0" text-anchor="middle" font-size="\([0-9.]*\)">a long.*/\1/p' long.svg)
awk -v f="$font" 'BEGIN { exit !(f > 7.9 && f < 10) }' || fail "a 168-character title got font size '$font'"

# usage errors: exit 2, nothing written
expect 2 "$NNZ" report;                                  has err "nothing to draw"
expect 2 "$NNZ" report gmp.safetensors --results res.csv; has err "not both"
expect 2 "$NNZ" report --results res.csv --out res.csv;   has err "overwrite its input"
expect 2 "$NNZ" report --result res.csv;                  has err "results"
expect 2 "$NNZ" report a b;                              has err "argument"
# runtime errors: exit 1 naming the file (and line), the old picture untouched, no temp file
bad() { # bad NAME CONTENT PATTERN
    printf '%b' "$2" >"$1"
    expect 1 "$NNZ" report --results "$1" --out curves.svg
    has err "$3"
    cmp -s curves.svg keep.svg || fail "$1: the existing picture changed"
}
bad empty.csv '' "empty"
bad comments.csv '# nothing\n\n' "empty"
bad header.csv 'method,model,sparsity,accuracy\n' "no results"
bad nocol.csv 'method,model,sparsity\nx,y,0.5\n' "no 'accuracy' column"
bad twice.csv 'method,model,sparsity,accuracy,model\n' "'model' appears twice"
bad nan.csv 'method,model,sparsity,accuracy\nx,y,0.5,high\n' "line 2: accuracy 'high' is not a number"
bad pct.csv 'method,model,sparsity,accuracy\nx,y,85,0.9\n' "line 2: sparsity 85 is not a fraction"
bad neg.csv 'method,model,sparsity,accuracy\nx,y,0.5,-0.1\n' "not a fraction"
bad cols.csv 'method,model,sparsity,accuracy\nx,y,0.5\n' "line 2 has 3 columns, the header 4"
bad noname.csv 'method,model,sparsity,accuracy\n,y,0.5,0.5\n' "line 2: empty method"
bad quote.csv 'method,model,sparsity,accuracy\n"a,b",y,0.5,0.5\n' "quoted"
bad inf.csv 'method,model,sparsity,accuracy\nx,y,inf,0.5\n' "not a number"
head -c 9000 /dev/zero | tr '\0' 'a' >long.csv
expect 1 "$NNZ" report --results long.csv --out curves.svg; has err "longer than"
expect 1 "$NNZ" report --results missing.csv --out curves.svg; has err "cannot open the results file 'missing.csv'"
expect 1 "$NNZ" report missing.safetensors --out x.svg; has err "missing.safetensors"
[ -e x.svg ] && fail "a picture of a missing checkpoint"
expect 1 "$NNZ" report --results res.csv --out no/such/dir/c.svg; has err "c.svg"
cmp -s curves.svg keep.svg || fail "the existing picture changed"
no_temp
echo "cli_report: ok"
