"The repository is consistent: modules match the notebooks, notebooks are clean, README matches index.ipynb."
import json, re, shutil, subprocess, sys
from pathlib import Path
import pytest
from conftest import notebooks

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

def _git(*args):
    return subprocess.run(['git', *args], cwd=ROOT, capture_output=True, text=True)

@pytest.mark.skipif(shutil.which('git') is None or not (ROOT/'.git').exists(), reason='needs a git checkout')
def test_export_matches_notebooks():
    "nbdev_export reproduces pot_nb/ exactly as committed (nobody edited the modules by hand)."
    before = _git('diff', '--', 'pot_nb').stdout
    r = subprocess.run([str(BIN/'nbdev_export')], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    after = _git('diff', '--', 'pot_nb').stdout
    untracked = _git('ls-files', '--others', '--exclude-standard', '--', 'pot_nb').stdout.strip()
    assert after == before, 'nbdev_export changed pot_nb/: a module was edited by hand or a notebook not exported'
    assert not untracked, f'nbdev_export wrote files that are not committed: {untracked}'

def test_notebooks_are_clean(tmp_path):
    "Every notebook is already nbdev_clean'ed (no execution counts or noisy metadata)."
    nbs = sorted(notebooks(ROOT/'nbs'))
    assert nbs, 'no notebooks found'
    for nb in nbs:
        cp = tmp_path/nb.name
        shutil.copy(nb, cp)
        r = subprocess.run([str(BIN/'nbdev_clean'), '--fname', str(cp)], cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert json.loads(cp.read_text()) == json.loads(nb.read_text()), f'{nb.name} is not clean: run nbdev_clean'

def test_readme_matches_index():
    r = subprocess.run([sys.executable, str(ROOT/'scripts'/'readme.py'), '--check'], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr

def _listed(entries)->list:
    "Every notebook path of a parsed sidebar, sections flattened."
    out = []
    for e in entries:
        if isinstance(e, str): out.append(e)
        else: out += _listed(e.get('contents', []))
    return out

def test_sidebar_lists_every_notebook():
    import yaml
    side = yaml.safe_load((ROOT/'nbs'/'sidebar.yml').read_text())      # a mis-indented entry fails here
    listed = _listed(side['website']['sidebar']['contents'])
    for nb in sorted(notebooks(ROOT/'nbs')):
        assert str(nb.relative_to(ROOT/'nbs')) in listed, f'{nb.name} missing from nbs/sidebar.yml (run nbdev_sidebar --force)'


MACHINE_PATH = re.compile(r'(/work/|/root/|/home/[^/\s"]+/|/Users/[^/\s"]+/|site-packages|\.venv/|[A-Z]:\\\\Users)')

def test_committed_outputs_hold_no_machine_paths():
    "Outputs stored in the notebooks show no checkout folder, home folder or virtual environment of the machine that ran them."
    found = []
    for nb in sorted(notebooks(ROOT/'nbs')):
        for i, c in enumerate(json.loads(nb.read_text())['cells']):
            for o in c.get('outputs', []):
                text = ''.join(o.get('text', '')) + ''.join(''.join(v) for k, v in o.get('data', {}).items() if k.startswith('text/'))
                text += ''.join(o.get('traceback', []))
                found += [f'{nb.name} cell {i}: {m.group(0)!r} in {text[max(0, m.start() - 60):m.end() + 60]!r}'
                          for m in MACHINE_PATH.finditer(text)]
    assert not found, '\n'.join(found[:10])


def test_notebooks_cite_no_missing_file():
    "The notebooks explain the method themselves: no reference to a design document that is not in the repository."
    cites = [nb.name for nb in sorted(notebooks(ROOT/'nbs')) if 'DESIGN' in nb.read_text()]
    assert not cites, cites


def test_notebooks_store_no_widget_state():
    "Widget state (kilobytes of model JSON per slider) is not committed: the notebooks store their static views."
    stored = [nb.name for nb in sorted(notebooks(ROOT/'nbs')) if 'widgets' in json.loads(nb.read_text())['metadata']]
    assert not stored, stored


def test_notebooks_stay_light():
    "Photo-like figures are stored as JPEG (`%config InlineBackend.figure_formats`): a clone stays small to fetch."
    sizes = {p.name: p.stat().st_size for p in notebooks(ROOT/'nbs')}
    heavy = {n: s for n, s in sizes.items() if s > 650_000}
    assert not heavy, f'notebooks over 650 kB: {heavy}'


def test_no_private_names_cross_modules():
    "A module uses another's public names only: what one module needs from another is part of that one's API."
    bad = []
    for f in sorted((ROOT/'pot_nb').rglob('*.py')):
        for line in f.read_text().splitlines():
            m = re.match(r'\s*from (?:\.+|pot_nb\.)([\w.]+) import (.+)', line)
            if m: bad += [f'{f.name}: {n.strip()} from {m.group(1)}' for n in m.group(2).split(',') if n.strip().startswith('_')]
    assert not bad, bad


def test_core_never_imports_the_studies():
    "The studies (benchmark, profile, ablation, real photos) are an optional subpackage: the library runs without them."
    users = [f.name for f in sorted((ROOT/'pot_nb').glob('*.py')) if re.search(r'^\s*(from|import) .*studies', f.read_text(), re.M)]
    assert not users, users
