#!/usr/bin/env bash
# Render notebooks to HTML with nbconvert and photograph them in headless Chromium, the way a reader meets them.
#   scripts/screenshots.sh [OUT_DIR] [NOTEBOOK ...]
# OUT_DIR defaults to /tmp/pot_nb_docs (never the repository); without notebooks, every nbs/*.ipynb is rendered.
# The stored outputs are rendered as they are (no execution). As on the Quarto site, `#| hide` cells are dropped
# and `#| echo: false` cells show only their output (a copy of the notebook is filtered first). Screenshots
# (1280×2400, the top of each page) go to OUT_DIR/<name>.png next to OUT_DIR/<name>.html.
# Needs Debian's `chromium` (apt-get install -y chromium) and jupyter nbconvert.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:-/tmp/pot_nb_docs}"; shift || true
mkdir -p "$OUT/src"
if [ $# -eq 0 ]; then set -- "$ROOT"/nbs/*.ipynb "$ROOT"/nbs/studies/*.ipynb; fi
CHROME="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
[ -n "$CHROME" ] || { echo "chromium not found: apt-get install -y chromium" >&2; exit 1; }
for nb in "$@"; do
  name="$(basename "$nb" .ipynb)"
  python3 - "$nb" "$OUT/src/$name.ipynb" <<'PY'
import json, re, sys
nb = json.load(open(sys.argv[1]))
def d(c): return {m.strip() for m in re.findall(r'^#\|\s*([^\n]*)$', ''.join(c['source']), re.M)}
cells = []
for c in nb['cells']:
    ds = d(c)
    if 'hide' in ds or 'include: false' in ds: continue
    if 'echo: false' in ds and not c.get('outputs'): continue     # nothing to show (e.g. an import cell)
    if c['cell_type'] == 'code':
        if 'echo: false' in ds or 'exporti' in ds: c.setdefault('metadata', {})['jupyter'] = {'source_hidden': True}; c['source'] = ''
        else: c['source'] = re.sub(r'^#\|[^\n]*\n?', '', ''.join(c['source']), flags=re.M)
        for o in c.get('outputs', []):   # show_doc's Quarto link attributes mean nothing to nbconvert's markdown
            md = o.get('data', {}).get('text/markdown')
            if md: o['data']['text/markdown'] = re.sub(r'\{target="_blank"[^}]*\}', '', ''.join(md))
    cells.append(c)
nb['cells'] = cells
json.dump(nb, open(sys.argv[2], 'w'))
PY
  jupyter nbconvert --to html --output-dir "$OUT" --output "$name" "$OUT/src/$name.ipynb" >/dev/null 2>&1 \
    || { echo "nbconvert failed on $nb" >&2; exit 1; }
  "$CHROME" --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --hide-scrollbars --window-size=1280,2400 \
    --screenshot="$OUT/$name.png" "file://$OUT/$name.html" >/dev/null 2>&1 \
    || { echo "chromium failed on $OUT/$name.html" >&2; exit 1; }
  echo "$OUT/$name.html -> $OUT/$name.png"
done
