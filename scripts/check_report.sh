#!/usr/bin/env bash
# Render a dartool report in headless Chromium (network off), check that every <img> loaded, and take a
# full-page screenshot.
#
#   bash scripts/check_report.sh REPORT_DIR|report.html [SCREENSHOT.png] [WIDTH]
#
# Default screenshot: <report dir>/screenshot.png; width 1400 px. Needs Debian's chromium
# (apt-get install -y chromium). Exit 0 = rendered with every image loaded; 1 = a check failed; 2 = bad use.
#
# How: a copy of report.html is made in an empty temporary folder (so it must be self-contained) with a tiny
# script appended that, after the load event, counts the images with naturalWidth > 0 and writes the counts
# and the page height into <body data-...>. `chromium --dump-dom` prints the DOM after the load, which is
# parsed here; the screenshot is then taken at the measured page height. All host names resolve to nothing,
# so any attempt to fetch from the network fails the image check.
#
# Robustness (each chromium run is a fresh browser with a throw-away profile inside the temporary folder):
#   * Neither --virtual-time-budget nor --timeout: headless Chromium already waits for the page's load event
#     before it dumps the DOM or takes the screenshot, and the report runs no timers. `--screenshot` now and
#     then never returns (Chromium 156 here: 8 runs in 220 with the budget, 4 in 107 with --timeout, 1 in
#     about 400 with neither); the bounded retry below absorbs the rest.
#   * --disable-dev-shm-usage: a full-page screenshot (1400 x 15000 px, ~85 MB) does not fit a container's
#     default 64 MB /dev/shm; Debian's launcher adds the flag only when its own check of /dev/shm works.
#   * Each chromium run is bounded in real time (CHECK_REPORT_TIMEOUT seconds, default 30; the whole
#     process group is killed), and only a run that hung, crashed or printed nothing is retried, at most
#     CHECK_REPORT_ATTEMPTS times in all (default 3). What the page reports (images, load event) is never
#     retried. On a failure the tail of chromium's stderr is printed before the one-line reason.
set -euo pipefail

die() { echo "check_report: $*" >&2; exit "${2:-1}"; }
[ $# -ge 1 ] || die "usage: bash scripts/check_report.sh REPORT_DIR|report.html [SCREENSHOT.png] [WIDTH]" 2
src=$1
[ -d "$src" ] && src="$src/report.html"
[ -f "$src" ] || die "no report at $1 (expected a report directory or an .html file)" 2
shot=${2:-$(dirname "$src")/screenshot.png}
width=${3:-1400}

chrome=""
for c in chromium chromium-browser google-chrome; do
  if command -v "$c" >/dev/null 2>&1; then chrome=$c; break; fi
done
[ -n "$chrome" ] || die "chromium not found; install it with: apt-get install -y chromium" 2

per_run=${CHECK_REPORT_TIMEOUT:-30}
attempts=${CHECK_REPORT_ATTEMPTS:-3}
[[ "$per_run" =~ ^[1-9][0-9]*$ ]] || die "CHECK_REPORT_TIMEOUT must be a positive whole number of seconds" 2
[[ "$attempts" =~ ^[1-9][0-9]*$ ]] || die "CHECK_REPORT_ATTEMPTS must be a positive whole number" 2
command -v timeout >/dev/null 2>&1 || die "the 'timeout' command (coreutils) is needed" 2

work=$(mktemp -d)
running=""
# On exit, or when this script is stopped, no chromium is left running and the temporary folder goes.
cleanup() {
  if [ -n "$running" ]; then
    kill -TERM -- "-$running" 2>/dev/null || true
    wait "$running" 2>/dev/null || true
  fi
  # (a browser that was just killed may still be writing there for a moment)
  rm -rf "$work" 2>/dev/null || { sleep 1; rm -rf "$work" 2>/dev/null; } || true
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# The probe script: counts loaded images after the load event and records the page height.
python3 - "$src" "$work/page.html" <<'PY'
import sys
src, dst = sys.argv[1], sys.argv[2]
page = open(src, encoding="utf-8").read()
probe = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  var b = document.body;
  b.setAttribute('data-img-total', String(imgs.length));
  b.setAttribute('data-img-broken', String(bad.length));
  b.setAttribute('data-img-broken-names', bad.map(function (i) { return i.getAttribute('data-file') || i.alt; }).join('|'));
  b.setAttribute('data-page-height', String(Math.ceil(document.documentElement.scrollHeight)));
});
</script>"""
i = page.rfind("</body>")
page = page[:i] + probe + page[i:] if i >= 0 else page + probe
open(dst, "w", encoding="utf-8").write(page)
PY

flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking
       --disable-component-update --disable-sync --hide-scrollbars --disable-dev-shm-usage
       --host-resolver-rules="MAP * ~NOTFOUND" --run-all-compositor-stages-before-draw)

# chromium's stderr, less the noise of a machine without D-Bus, and of Debian's launcher.
show_err() {
  grep -v -e 'dbus/' -e 'unexpected operator' "$work/err.log" 2>/dev/null | tail -n 20 >&2 || true
}

# run_chromium WHAT OUT RESULT CHECK ARGS...: run chromium with a fresh profile and ARGS, its stdout to OUT,
# bounded in time; CHECK RESULT must then succeed (RESULT: the file the run should write, OUT or another).
# A run that hung, crashed or wrote no usable RESULT is tried again with a fresh browser; returns 1 when every
# attempt failed.
run_chromium() {
  local what=$1 out=$2 result=$3 check=$4 k rc why
  shift 4
  for ((k = 1; k <= attempts; k++)); do
    local profile="$work/profile.$what.$k"
    mkdir -p "$profile"
    rm -f "$out" "$result"
    rc=0
    # timeout puts chromium in a process group of its own and kills the whole group when the time is up.
    timeout --kill-after=5 "$per_run" "$chrome" "${flags[@]}" --user-data-dir="$profile" "$@" \
      >"$out" 2>>"$work/err.log" </dev/null &
    running=$!
    wait "$running" 2>/dev/null || rc=$?   # (2>/dev/null: bash's own "Killed" notice)
    running=""
    if [ "$rc" -eq 0 ] && "$check" "$result"; then return 0; fi
    case $rc in
      124|137) why="hung (no result after ${per_run} s; killed)" ;;
      0) why="exited without a result" ;;
      *) why="exited with status $rc" ;;
    esac
    echo "check_report: chromium $what: attempt $k of $attempts $why" >&2
    echo "--- chromium $what, attempt $k: $why" >>"$work/err.log"
  done
  return 1
}

dom_ok() { grep -q '<body' "$1"; }       # a DOM came back (what it says is judged below, never retried)
shot_ok() { [ -s "$1" ]; }

run_chromium dom "$work/dom.html" "$work/dom.html" dom_ok --window-size="$width,1000" \
  --dump-dom "file://$work/page.html" \
  || { show_err; die "chromium failed to render $src"; }
dom=$(cat "$work/dom.html")

attr() { printf '%s' "$dom" | grep -o "$1=\"[^\"]*\"" | head -1 | sed -e "s/^$1=\"//" -e 's/"$//' || true; }
total=$(attr data-img-total)
broken=$(attr data-img-broken)
height=$(attr data-page-height)
[ -n "$total" ] || die "the page did not finish loading in chromium (no load event seen)"
[ "$total" -gt 0 ] || die "the report has no images"
if [ "$broken" != "0" ]; then
  die "$broken of $total images did not load: $(attr data-img-broken-names)"
fi

height=${height:-4000}
[ "$height" -le 60000 ] || height=60000
run_chromium screenshot "$work/shot.log" "$work/shot.png" shot_ok --window-size="$width,$height" \
  --screenshot="$work/shot.png" "file://$work/page.html" \
  || { show_err; die "chromium could not take the screenshot"; }
mkdir -p "$(dirname "$shot")"
cp "$work/shot.png" "$shot"
echo "report OK: $total images, all loaded (network off); page ${width}x${height}px; screenshot: $shot"
