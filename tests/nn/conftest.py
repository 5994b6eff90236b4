import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny graphs: one thread avoids OpenMP hand-offs, costly on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
