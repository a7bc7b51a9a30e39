#!/usr/bin/env python3
"""Insert a `show_doc(name)` cell after every exported definition that has none, so each public function and
class of a notebook gets its API reference on the docs page.

    python scripts/add_show_docs.py                 # every notebook in nbs/
    python scripts/add_show_docs.py nbs/02_viz.ipynb nbs/13_explorer.ipynb
    python scripts/add_show_docs.py --check ...     # list what is missing, change nothing, exit 1 if anything is

A definition counts when it is a top-level `def` or `class` whose name does not start with `_`, in a code cell
with an `#| export` (or `#| exports`) directive. A name that already has a `show_doc(name...)` call anywhere in
the notebook is left alone, so the script is idempotent. The notebook also gets `from nbdev.showdoc import *`
in a hidden cell when it lacks one. New cells have no outputs: execute the notebook afterwards to render them.
"""
import ast, hashlib, json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXPORT = re.compile(r'^\s*#\|\s*(export|exports)\b', re.M)

def _src(cell) -> str:
    s = cell.get('source', '')
    return ''.join(s) if isinstance(s, list) else s

def exported_names(src: str) -> list:
    "Public top-level functions and classes defined in one cell's source (directives and magics ignored)."
    code = '\n'.join('' if l.lstrip().startswith(('%', '!')) else l for l in src.splitlines())
    try: tree = ast.parse(code)
    except SyntaxError: return []
    return [n.name for n in tree.body
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not n.name.startswith('_')]

def documented(nb: dict) -> set:
    "Names that already have a `show_doc(...)` call in the notebook."
    return {m.group(1) for c in nb['cells'] if c['cell_type'] == 'code'
            for m in re.finditer(r'show_doc\(\s*([A-Za-z_][\w.]*)', _src(c))}

def _cell(source: str, key: str) -> dict:
    return dict(cell_type='code', execution_count=None, id=hashlib.sha1(key.encode()).hexdigest()[:8],
                metadata={}, outputs=[], source=source)

def add_show_docs(path, check: bool = False) -> list:
    "Add the missing show_doc cells of one notebook (unless `check`); returns the names that lacked one."
    path = Path(path)
    nb = json.loads(path.read_text())
    have, missing, cells = documented(nb), [], []
    for c in nb['cells']:
        cells.append(c)
        if c['cell_type'] != 'code' or not EXPORT.search(_src(c)): continue
        for name in exported_names(_src(c)):
            if name in have: continue
            missing.append(name); have.add(name)
            cells.append(_cell(f'show_doc({name})', f'{path.name}:{name}'))
    if check or not missing: return missing
    if not any('nbdev.showdoc' in _src(c) for c in cells if c['cell_type'] == 'code'):
        first = next((i for i, c in enumerate(cells) if c['cell_type'] == 'code' and 'default_exp' in _src(c)), -1)
        cells.insert(first + 1, _cell('#| hide\nfrom nbdev.showdoc import *', f'{path.name}:import'))
    nb['cells'] = cells
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
    return missing

def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    check = '--check' in argv
    paths = [a for a in argv if a != '--check'] or sorted(p for p in (ROOT/'nbs').rglob('*.ipynb') if '.ipynb_checkpoints' not in p.parts)
    total = 0
    for p in paths:
        miss = add_show_docs(p, check)
        total += len(miss)
        if miss: print(f"{p}: {'missing' if check else 'added'} show_doc for {', '.join(miss)}")
    if check and total: sys.exit(1)

if __name__ == '__main__': main()
