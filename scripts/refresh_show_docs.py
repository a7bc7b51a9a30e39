#!/usr/bin/env python3
"""Find stored `show_doc` outputs whose signature differs from what the code renders now; `--fix` rewrites them.

    python scripts/refresh_show_docs.py            # list the stale renderings, exit 1 if there are any
    python scripts/refresh_show_docs.py --fix      # rewrite them in place (then run nbdev_clean)

A `show_doc(X)` output depends on nothing but the code of `X` (signature, parameter comments, docstring), so
rewriting it gives the output that re-running the cell would. The `[source](...#L<line>)` link is compared
without its line number (every edit above a definition moves it) and rewritten with the line in `pot_nb/` now.
"""
import ast, importlib, json, pkgutil, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CALL = re.compile(r'show_doc\((\w+)((?:\.\w+)*)\)')

def live_names()->dict:
    "Every public name of every pot_nb module (studies included): what a `show_doc(X)` cell can name."
    import pot_nb
    names = {}
    for m in pkgutil.walk_packages(pot_nb.__path__, 'pot_nb.'):
        mod = importlib.import_module(m.name)
        names.update({n: getattr(mod, n) for n in getattr(mod, '__all__', []) if hasattr(mod, n)})
    return names

def _line(obj)->int|None:
    "The line of `obj`'s definition in its module file (methods: inside their class)."
    mod = sys.modules.get(getattr(obj, '__module__', ''), None)
    if mod is None or not getattr(mod, '__file__', None): return None
    want = obj.__qualname__.split('.')
    for node in ast.parse(Path(mod.__file__).read_text()).body:
        if getattr(node, 'name', None) != want[0]: continue
        if len(want) == 1: return node.lineno
        return next((n.lineno for n in node.body if getattr(n, 'name', None) == want[1]), None)
    return None

def render(obj)->dict:
    "The output `show_doc(obj)` gives in a notebook: markdown (with its source line) and plain text."
    from nbdev.showdoc import show_doc
    d = show_doc(obj)
    md = re.sub(r'#L\w+\)', f'#L{_line(obj)})', d._repr_markdown_(), count=1)
    return {'text/markdown': md, 'text/plain': repr(d)}

def _unlinked(md:str)->str: return '\n'.join(l for l in md.splitlines() if not l.startswith('[source]')).strip()

def signature(md:str)->str:
    """What a rendering says of the API: names, annotations, defaults and docstring, without the source link, the
    parameter comments or the line breaks (a kernel renders a dataclass defined in the notebook without its field
    comments, the module file with them)."""
    return re.sub(r',\)', ')', re.sub(r'\s+', '', re.sub(r' # [^\n]*', '', _unlinked(md))))

def stale_signatures(nb:dict, names:dict, fix:bool=False)->list:
    """The `show_doc` cells of a notebook (JSON) whose stored signature differs from the live one; with `fix`, every
    stored rendering that is not the live one exactly (parameter comments too) is rewritten."""
    stale = []
    for c in nb['cells']:
        src = ''.join(c['source']).strip()
        m = CALL.fullmatch(src)
        outs = [o for o in c.get('outputs', []) if 'text/markdown' in o.get('data', {})]
        if c['cell_type'] != 'code' or not m or not outs: continue
        obj = names[m.group(1)]
        for attr in filter(None, m.group(2).split('.')): obj = getattr(obj, attr)
        live, stored = render(obj), ''.join(outs[0]['data']['text/markdown'])
        if signature(stored) != signature(live['text/markdown']): stale.append(src)
        if fix and _unlinked(stored) != _unlinked(live['text/markdown']):
            outs[0]['data'] = {k: v.splitlines(keepends=True) for k, v in live.items()}
    return stale

if __name__ == '__main__':
    fix, names, found = '--fix' in sys.argv, live_names(), 0
    for p in sorted((ROOT/'nbs').rglob('*.ipynb')):
        if '.ipynb_checkpoints' in p.parts: continue
        nb = json.loads(p.read_text())
        if stale := stale_signatures(nb, names, fix):
            found += len(stale); print(f'{p.relative_to(ROOT)}: {", ".join(stale)}')
            if fix: p.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
    print(f'{found} stale show_doc output(s)' + (' rewritten' if fix and found else ''))
    sys.exit(1 if found and not fix else 0)
