"""Notebooks as users meet them: run top to bottom in a real Jupyter kernel (ipykernel through nbclient, the way
JupyterLab's Run All runs them), with the widget comm present and no variable that switches widgets off."""
import os
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ['13_explorer.ipynb', '19_tutorial_own_dataset.ipynb', '20_tutorial_cam_prior.ipynb']
WIDGET_VIEW = 'application/vnd.jupyter.widget-view+json'


def run_in_kernel(name):
    "Execute a copy of the notebook in a fresh python3 kernel; returns it with its new outputs and widget state."
    import nbformat, nbclient
    nb = nbformat.read(ROOT/'nbs'/name, as_version=4)
    env = {k: v for k, v in os.environ.items() if k not in ('POT_NB_STATIC', 'IN_TEST')}
    client = nbclient.NotebookClient(nb, timeout=1200, kernel_name='python3', allow_errors=True,
                                     resources={'metadata': {'path': str(ROOT/'nbs')}})
    client.execute(env=env)
    return nb


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_runs_in_a_real_kernel(name):
    nb = run_in_kernel(name)
    errors = [(i, o.get('ename'), o.get('evalue')) for i, c in enumerate(nb.cells) for o in c.get('outputs', [])
              if o.get('output_type') == 'error']
    assert not errors, errors[:3]
    if name == '13_explorer.ipynb':                     # the live explorer was displayed, not the static fallback
        views = [i for i, c in enumerate(nb.cells) for o in c.get('outputs', []) if WIDGET_VIEW in o.get('data', {})]
        assert views, 'no widget was displayed'
        state = nb.metadata['widgets']['application/vnd.jupyter.widget-state+json']['state']
        models = {m['model_name'] for m in state.values()}
        assert {'IntSliderModel', 'SelectionSliderModel', 'ToggleButtonsModel', 'OutputModel'} <= models, models
        printed = ''.join(o.get('text', '') for c in nb.cells for o in c.get('outputs', []) if o.get('name') == 'stdout')
        assert 'widget frontend: True' in printed
