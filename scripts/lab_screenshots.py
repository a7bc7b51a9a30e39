"""Photograph the live CAM explorer in JupyterLab, the way a user meets it: start JupyterLab on localhost, open
nbs/13_explorer.ipynb in headless Chromium (Selenium), Run All, wait for the widget, screenshot it, move the
n_clusters slider with the keyboard, wait for the redraw, screenshot again.

    python scripts/lab_screenshots.py [OUT_DIR]        # default /tmp/pot_nb_lab (never the repository)

Needs `pip install jupyterlab selenium` in the environment and Debian's `chromium` and `chromium-driver`.
Prints the time from the key press to the new figure, and exits non-zero when a step fails."""
import os, socket, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(sys.argv[1] if len(sys.argv) > 1 else '/tmp/pot_nb_lab'); OUT.mkdir(parents=True, exist_ok=True)


def free_port()->int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def wait(cond, timeout, what):
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            v = cond()
            if v: return v
        except Exception: pass
        time.sleep(0.5)
    raise SystemExit(f'lab_screenshots: timed out after {timeout}s waiting for {what}')


def main():
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    port = free_port()
    lab = subprocess.Popen([sys.executable, '-m', 'jupyterlab', '--no-browser', f'--port={port}', '--ip=127.0.0.1',
                            '--IdentityProvider.token=', '--ServerApp.password=', '--LabApp.expose_app_in_browser=True',
                            '--ServerApp.disable_check_xsrf=True', f'--ServerApp.root_dir={ROOT/"nbs"}', '--allow-root'],
                           stdout=open(OUT/'lab.log', 'w'), stderr=subprocess.STDOUT,
                           env={**os.environ, 'OMP_NUM_THREADS': '2'})
    opts = webdriver.ChromeOptions()
    for a in ('--headless=new', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
              '--disable-component-update', '--disable-sync', '--window-size=1400,1300', '--disable-dev-shm-usage'):
        opts.add_argument(a)
    opts.binary_location = '/usr/bin/chromium'
    driver = None
    try:
        wait(lambda: socket.create_connection(('127.0.0.1', port), timeout=1), 60, 'JupyterLab to listen')
        driver = webdriver.Chrome(service=webdriver.ChromeService('/usr/bin/chromedriver'), options=opts)
        driver.get(f'http://127.0.0.1:{port}/lab/tree/13_explorer.ipynb')
        wait(lambda: driver.execute_script('return !!(window.jupyterapp && window.jupyterapp.shell.currentWidget '
                                           '&& window.jupyterapp.shell.currentWidget.sessionContext '
                                           '&& window.jupyterapp.shell.currentWidget.sessionContext.session)'),
             120, 'the notebook and its kernel')
        wait(lambda: driver.execute_script("return window.jupyterapp.shell.currentWidget.sessionContext.session"
                                           ".kernel.status === 'idle'"), 120, 'the kernel to be idle')
        driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        slider = wait(lambda: driver.find_elements(By.CSS_SELECTOR, '.widget-slider .ui-slider-handle, '
                                                                     '.widget-slider .noUi-handle'), 300, 'the widget')[0]
        wait(lambda: driver.execute_script("return window.jupyterapp.shell.currentWidget.sessionContext.session"
                                           ".kernel.status === 'idle'"), 600, 'Run All to finish')
        driver.execute_script('arguments[0].scrollIntoView({block: "start"})',
                              driver.find_elements(By.CSS_SELECTOR, '.widget-vbox')[0])
        time.sleep(2)
        driver.save_screenshot(str(OUT/'explorer_before.png'))
        imgs = lambda: [e.get_attribute('src')[-64:] for e in driver.find_elements(By.CSS_SELECTOR, '.widget-output img')]
        before = imgs()
        t0 = time.time()
        slider.click(); slider.send_keys(Keys.ARROW_LEFT)               # n_clusters 3 -> 2
        wait(lambda: imgs() and imgs() != before, 60, 'the redraw')
        dt = time.time() - t0
        time.sleep(1)
        driver.save_screenshot(str(OUT/'explorer_after.png'))
        label = driver.find_elements(By.CSS_SELECTOR, '.widget-readout')[0].text
        print(f'explorer: n_clusters now {label}, redrawn {dt:.2f} s after the key press; '
              f'screenshots in {OUT}/explorer_before.png and explorer_after.png')
    finally:
        if driver is not None: driver.quit()
        lab.terminate(); lab.wait(30)


if __name__ == '__main__': main()
