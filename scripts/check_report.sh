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

work=$(mktemp -d)
profile=$(mktemp -d)
trap 'rm -rf "$work" "$profile"' EXIT

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
       --disable-component-update --disable-sync --hide-scrollbars --user-data-dir="$profile"
       --host-resolver-rules="MAP * ~NOTFOUND" --run-all-compositor-stages-before-draw
       --virtual-time-budget=10000)

dom=$("$chrome" "${flags[@]}" --window-size="$width,1000" --dump-dom "file://$work/page.html" 2>"$work/err.log") \
  || { cat "$work/err.log" >&2; die "chromium failed to render $src"; }

attr() { printf '%s' "$dom" | grep -o "$1=\"[^\"]*\"" | head -1 | sed -e "s/^$1=\"//" -e 's/"$//'; }
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
"$chrome" "${flags[@]}" --window-size="$width,$height" --screenshot="$work/shot.png" "file://$work/page.html" \
  >/dev/null 2>>"$work/err.log" || { cat "$work/err.log" >&2; die "chromium could not take the screenshot"; }
[ -s "$work/shot.png" ] || die "chromium wrote no screenshot"
mkdir -p "$(dirname "$shot")"
cp "$work/shot.png" "$shot"
echo "report OK: $total images, all loaded (network off); page ${width}x${height}px; screenshot: $shot"
