"Every public function and class has an API reference (a `show_doc` cell in its notebook) and a docstring."
import importlib, inspect, json, os, re, shutil, subprocess, sys
from pathlib import Path
import pytest
from conftest import notebooks

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT/'scripts'))
from add_show_docs import add_show_docs, documented  # noqa: E402

def _modules():
    "(notebook, module name) of every notebook with a `#| default_exp`."
    out = []
    for nb in sorted(notebooks(ROOT/'nbs')):
        cells = json.loads(nb.read_text())['cells']
        for c in cells:
            m = re.search(r'^#\|\s*default_exp\s+(\S+)', ''.join(c['source']), re.M)
            if m: out.append((nb, m.group(1))); break
    return out

MODULES = _modules()

def _public(mod):
    "Functions and classes listed in the module's `__all__` (constants are documented in prose, not by show_doc)."
    return {n: getattr(mod, n) for n in getattr(mod, '__all__', []) if inspect.isfunction(getattr(mod, n)) or inspect.isclass(getattr(mod, n))}

def test_modules_found():
    assert len(MODULES) >= 10, MODULES

@pytest.mark.parametrize('nb,modname', MODULES, ids=[m for _, m in MODULES])
def test_show_doc_and_docstring(nb, modname):
    mod = importlib.import_module(f'pot_nb.{modname}')
    have = documented(json.loads(nb.read_text()))
    public = _public(mod)
    assert public, f'pot_nb.{modname} exports no function or class'
    no_show = sorted(n for n in public if n not in have)
    assert not no_show, f'{nb.name}: no show_doc cell for {no_show} (run `python scripts/add_show_docs.py {nb.relative_to(ROOT)}`)'
    no_doc = sorted(n for n, o in public.items() if not (inspect.getdoc(o) or '').strip())
    assert not no_doc, f'pot_nb.{modname}: no docstring for {no_doc}'

def test_add_show_docs_is_idempotent(tmp_path):
    "The script adds one cell per exported definition lacking one, after its cell, and nothing on a second run."
    cell = lambda src: dict(cell_type='code', execution_count=None, id=str(abs(hash(src)))[:8], metadata={}, outputs=[], source=src)
    nb = dict(cells=[cell('#| default_exp m'), cell('#| export\ndef f(x): "doc"\nclass A: pass\ndef _g(): pass'),
                     cell('f(1)'), cell('#| export\ndef h(): pass'), cell('show_doc(h)'), cell('def local(): pass')],
              metadata={}, nbformat=4, nbformat_minor=5)
    p = tmp_path/'x.ipynb'
    p.write_text(json.dumps(nb))
    assert add_show_docs(p) == ['f', 'A']
    srcs = [''.join(c['source']) for c in json.loads(p.read_text())['cells']]
    assert srcs[1] == '#| hide\nfrom nbdev.showdoc import *'
    assert srcs[3:5] == ['show_doc(f)', 'show_doc(A)'] and srcs[5] == 'f(1)'
    before = p.read_text()
    assert add_show_docs(p) == [] and p.read_text() == before
    assert add_show_docs(p, check=True) == []


def test_docs_processing_runs_on_every_notebook():
    """nbdev's docs step (what `nbdev_docs` runs before Quarto renders) processes every notebook, and every cell it
    executes for the docs is import-only: a cell mixing imports with other code is an error here, not a warning."""
    code = 'from nbdev.serve import proc_nbs; proc_nbs(n_workers=2, force=True)'
    env = {**os.environ, 'OMP_NUM_THREADS': '1',
           'PYTHONWARNINGS': 'error:Found cells containing imports:UserWarning'}
    r = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    nbs = sorted(str(p.relative_to(ROOT/'nbs')) for p in notebooks(ROOT/'nbs'))
    done = sorted(str(p.relative_to(ROOT/'_proc')) for p in notebooks(ROOT/'_proc'))
    assert done == nbs, set(nbs) ^ set(done)
    for name in nbs:                                  # the API reference rendered: show_doc cells have their output
        cells = json.loads((ROOT/'_proc'/name).read_text())['cells']
        docs = [c for c in cells if c['cell_type'] == 'code' and 'show_doc(' in ''.join(c['source'])]
        assert all(c.get('outputs') for c in docs), f'{name}: a show_doc cell has no output'


from refresh_show_docs import live_names, render, stale_signatures  # noqa: E402

def test_rendered_signatures_are_current():
    """Every stored `show_doc` output is what the code renders now (signature, parameter comments, docstring):
    run `python scripts/refresh_show_docs.py --fix` (or the notebook) after changing a definition."""
    names = live_names()
    stale = {str(nb.relative_to(ROOT/'nbs')): s for nb in notebooks(ROOT/'nbs')
             if (s := stale_signatures(json.loads(nb.read_text()), names))}
    assert not stale, f'stale rendered API docs: {stale}'

def test_stale_signature_check_can_fail():
    "A stored rendering of `pipeline_table` with a parameter it does not have is caught and fixed; the live one passes."
    from pot_nb.pipeline import pipeline_table
    live = render(pipeline_table)
    cell = lambda md: dict(cell_type='code', source='show_doc(pipeline_table)',
                           outputs=[dict(output_type='execute_result', data={'text/markdown': md})])
    names = {'pipeline_table': pipeline_table}
    assert stale_signatures(dict(cells=[cell(live['text/markdown'])]), names) == []
    planted = live['text/markdown'].replace('runs:dict', 'runs:dict, n_clusters:int=3')
    nb = dict(cells=[cell(planted)])
    assert planted != live['text/markdown'] and stale_signatures(nb, names, fix=True) == ['show_doc(pipeline_table)']
    assert stale_signatures(nb, names) == []                                           # fixed in place
    assert re.search(r'pipeline\.py#L\d+\)', live['text/markdown'])                    # the source link has its line
