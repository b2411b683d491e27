"""Repo-wide fixtures: the seed, the user's view of errors, tiny offline bridges, one thread."""

import os

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _result_cache(tmp_path_factory: pytest.TempPathFactory):
    """Jobs run by the tests keep their result cache in a temporary folder, never in the
    user's ``~/.cache`` (the model cache stays where it is: the real model is big). Session
    scope, so module fixtures that run a job see it too."""
    before = os.environ.get("TL_OT_ABLATION_RESULT_CACHE")
    os.environ["TL_OT_ABLATION_RESULT_CACHE"] = str(tmp_path_factory.mktemp("result-cache"))
    yield
    if before is None:
        del os.environ["TL_OT_ABLATION_RESULT_CACHE"]
    else:
        os.environ["TL_OT_ABLATION_RESULT_CACHE"] = before


@pytest.fixture
def as_user():
    """Switch off the pytest-only jaxtyping checks, so a test sees the errors users see."""
    import jaxtyping

    jaxtyping.config.update("jaxtyping_disable", True)
    yield
    jaxtyping.config.update("jaxtyping_disable", False)


@pytest.fixture(scope="session")
def tiny_bridge():
    """A 3-layer random-weight Qwen2-style chat model as a TransformerBridge (offline)."""
    from tl_ot_ablation.lens.tiny import tiny_model

    return tiny_model("qwen2", n_layers=3, d_model=32)


@pytest.fixture(scope="session")
def tiny_gpt2():
    from tl_ot_ablation.lens.tiny import tiny_model

    return tiny_model("gpt2", n_layers=2, d_model=32)


@pytest.fixture
def no_accelerator(monkeypatch: pytest.MonkeyPatch) -> None:
    """Act as a machine with neither CUDA nor MPS, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module that asks for it (``pytestmark =
    pytest.mark.usefixtures("one_thread")``): tiny models and matrices gain nothing from more,
    and two-thread torch runs 10-40x slower while another process holds the cores
    (shared/TL4-NOTES.md)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
