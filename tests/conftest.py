"pytest set-up: hypothesis runs derandomized under CI (same examples every run), randomized locally."
import os
from hypothesis import settings, HealthCheck

settings.register_profile('ci', derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile('dev', deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile('ci' if os.environ.get('CI') else 'dev')

def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: longer tests (still run by make test)')
