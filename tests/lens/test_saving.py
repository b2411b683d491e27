"""``tlo.save`` / ``tlo.load`` (``lens.saving``) take a whole intervention set too."""

from pathlib import Path

from tests.helpers import HARMFUL, HARMLESS
from tl_ot_ablation import CollectOptions, InterventionSet, fit_actadd

QUIET = CollectOptions(progress=False)


def test_top_level_save_and_load_handle_intervention_sets(tiny_bridge, tmp_path: Path) -> None:
    import tl_ot_ablation as tlo

    fitted = fit_actadd(
        tiny_bridge,
        HARMFUL,
        HARMLESS,
        layer=2,
        collect=QUIET,
    )
    loaded = tlo.load(tlo.save(fitted, tmp_path / "set"))
    assert isinstance(loaded, InterventionSet) and list(loaded) == list(fitted)
