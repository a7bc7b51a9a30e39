"""The grain of the package's code, for the redesign's before/after table: function lengths, long signatures, long
exported cells, long lines and module sizes. `python scripts/code_metrics.py [pot_nb [no]]` (no: without the studies)."""
import ast, json, statistics, sys
from pathlib import Path

def functions(tree):
    "Every function and method definition in a module's syntax tree."
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]

def n_params(f)->int:
    a = f.args
    return len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) - (1 if a.args and a.args[0].arg in ('self', 'cls') else 0)

def exported_cells(nb_dir:Path):
    "Source lines of every `#| export` cell of the notebooks."
    for p in sorted(nb_dir.rglob('*.ipynb')):
        if '.ipynb_checkpoints' in p.parts: continue
        for c in json.loads(p.read_text())['cells']:
            s = ''.join(c['source'])
            if c['cell_type'] == 'code' and s.lstrip().startswith('#| export'): yield str(p), s.count('\n') + 1

def main(pkg='pot_nb', studies:str='yes'):
    "The table for the package; `studies='no'`: the core library only (without the `studies` subpackage)."
    root = Path(pkg)
    files = sorted(root.rglob('*.py')) if studies == 'yes' else sorted(root.glob('*.py'))
    mods = {str(p.relative_to(root)): p.read_text() for p in files if p.name not in ('_modidx.py', '__init__.py')}
    lens, many, longest = [], [], (0, '')
    for name, src in mods.items():
        for f in functions(ast.parse(src)):
            n = f.end_lineno - f.lineno + 1
            lens.append(n); longest = max(longest, (n, f"{name[:-3].replace('/', '.')}.{f.name}"))
            if n_params(f) > 10: many.append((n_params(f), f"{name[:-3].replace('/', '.')}.{f.name}"))
    cells = [n for name, n in exported_cells(root.parent/'nbs') if studies == 'yes' or 'studies' not in name]
    lines = [l for s in mods.values() for l in s.splitlines()]
    sizes = sorted(((s.count('\n'), n) for n, s in mods.items()), reverse=True)
    print(f'| function length, median / longest | {statistics.median(lens):g} / {longest[0]} (`{longest[1]}`) |')
    print(f'| functions with more than 10 parameters | {len(many)}; most: ' + ', '.join(f'`{n}` {k}' for k, n in sorted(many, reverse=True)[:4]) + ' |')
    print(f'| exported cells over 40 lines | {100 * sum(n > 40 for n in cells) / len(cells):.0f} % ({sum(n > 40 for n in cells)} of {len(cells)}) |')
    print(f'| lines over 120 / over 110 characters | {sum(len(l) > 120 for l in lines)} / {sum(len(l) > 110 for l in lines)} of {len(lines):,} |')
    print(f'| largest modules | ' + ', '.join(f"`{n[:-3].replace('/', '.')}` {k}" for k, n in sizes[:3]) + ' |')

if __name__ == '__main__': main(*sys.argv[1:])
