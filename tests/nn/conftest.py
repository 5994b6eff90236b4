import pytest


@pytest.fixture(autouse=True)
def _tiny_graphs_on_one_thread(single_thread):
    """Tiny graphs: one thread avoids OpenMP hand-offs, costly on a busy 2-core machine."""
    yield
