"""Result tables: percent rows and the paper-layout Markdown, from hand-made scores."""

from sdm import constants as C
from sdm.scores import ModelSetScores, SeparatedScores, markdown_table, percent_row


def scores(p_at_1: float, r_precision: float, map_at_r: float) -> dict[str, float]:
    return {C.PRECISION_AT_1: p_at_1, C.R_PRECISION: r_precision, C.MAP_AT_R: map_at_r}


def model_set(per_model: list[dict[str, float]]) -> ModelSetScores:
    n = len(per_model)
    mean = {m: sum(s[m] for s in per_model) / n for m in C.METRIC_NAMES}
    std = {m: (sum((s[m] - mean[m]) ** 2 for s in per_model) / n) ** 0.5
           for m in C.METRIC_NAMES}
    return ModelSetScores(dims={C.SEPARATED: 128, C.CONCATENATED: 128 * n}, num_models=n,
                          separated=SeparatedScores(per_model, mean, std),
                          concatenated=scores(0.9, 0.6, 0.5))


def test_the_spread_over_fold_models_is_shown_only_for_several_models():
    two = model_set([scores(0.80, 0.40, 0.30), scores(0.90, 0.50, 0.20)])
    one = model_set([scores(0.80, 0.40, 0.30)])
    # two models: means 85 / 45 / 25 %, population std 5 / 5 / 5 points
    assert markdown_table([percent_row("two", two), percent_row("one", one)]).splitlines()[2:] == [
        "| two | 90.00 | 60.00 | 50.00 | 85.00 ± 5.00 | 45.00 ± 5.00 | 25.00 ± 5.00 |",
        "| one | 90.00 | 60.00 | 50.00 | 80.00 | 40.00 | 30.00 |",
    ]
