#!/usr/bin/env python3
"""Write README.md from nbs/index.ipynb.

`nbdev_readme` renders through Quarto; where Quarto is installed, `make readme` uses it. Where it is not
(offline machines: Quarto is no PyPI or Debian package), this script renders the same notebook to GitHub
markdown with nbdev's own cell processing: `#| hide` cells are dropped, directives are stripped, the front
matter (`# Title` + `> description`) becomes the heading, code cells become ```python blocks and their text
outputs follow; PNG figures are written to index_files/figure-commonmark/ (where nbdev_readme puts them) and
linked; stderr, HTML-only outputs (progress bars) and the text stand-ins of figures are left out.
`python scripts/readme.py --check` exits 1 when README.md is out of date (text only; figures are not compared).
"""
import base64, json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def _directives(src):
    return {m.group(1).strip() for m in re.finditer(r'^#\|\s*([^\n]*)$', src, re.M)}

FIG_DIR = 'index_files/figure-commonmark'

def render(nb_path=ROOT/'nbs'/'index.ipynb', write_figures:bool=False) -> str:
    nb = json.loads(Path(nb_path).read_text())
    out = []
    for ci, cell in enumerate(nb['cells']):
        src = ''.join(cell['source'])
        d = _directives(src)
        if 'hide' in d or any(x.startswith('include: false') for x in d): continue
        body = re.sub(r'^#\|[^\n]*\n?', '', src, flags=re.M).strip('\n')
        if not body: continue
        if cell['cell_type'] == 'markdown':
            out.append(body)
            continue
        if not any(x.startswith('echo: false') for x in d): out.append('```python\n' + body + '\n```')
        for oi, o in enumerate(cell.get('outputs', [])):
            data = o.get('data', {})
            if o.get('name') == 'stderr' or o.get('output_type') == 'error': continue
            if data.get('image/png'):
                rel = f'{FIG_DIR}/cell-{ci}-output-{oi}.png'
                if write_figures:
                    (ROOT/FIG_DIR).mkdir(parents=True, exist_ok=True)
                    (ROOT/rel).write_bytes(base64.b64decode(''.join(data['image/png'])))
                out.append(f'![]({rel})')
                continue
            if data.get('text/html'): continue
            if data.get('text/markdown'): out.append(''.join(data['text/markdown'])); continue
            text = ''.join(o.get('text', '')) or ''.join(data.get('text/plain', ''))
            if text: out.append('    ' + text.rstrip('\n').replace('\n', '\n    '))
    return '\n\n'.join(out).rstrip('\n') + '\n'

if __name__ == '__main__':
    text, readme = render(write_figures='--check' not in sys.argv), ROOT/'README.md'
    if '--check' in sys.argv:
        ok = readme.exists() and readme.read_text() == text
        print('README.md is up to date' if ok else 'README.md differs from nbs/index.ipynb: run `make readme`')
        sys.exit(0 if ok else 1)
    readme.write_text(text)
    print(f'wrote {readme}')
