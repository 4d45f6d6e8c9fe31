"""Training on chosen feature groups only (TrainConfig.input_groups, what `tradeloop walk-forward
--feature-groups` sets): the members read exactly those groups' columns."""

from __future__ import annotations

import pydantic
import pytest

from models.data import SampleSet
from models.training import TrainConfig, fit_ensemble, train_ensemble
from pipelines.features.groups import BOOK_AND_TRADES, CANDLES, MULTI_TIMEFRAME, columns_of
from tests.support.models import TINY

GBM = TINY.with_updates(members=("gbm",), feature_selection=False, gbm_estimators=10)


def test_the_members_read_only_the_chosen_groups(samples: SampleSet) -> None:
    config = GBM.with_updates(input_groups=(CANDLES,))
    candles = columns_of((CANDLES,), samples.feature_columns)
    assert 0 < len(candles) < len(samples.feature_columns)
    trained = train_ensemble(samples, config)
    assert trained.selected_features == candles
    assert tuple(trained.hyperparameters()["input_groups"]) == (CANDLES,)
    fitted = fit_ensemble(samples.last(600), config.with_updates(input_groups=(MULTI_TIMEFRAME,)))
    assert fitted.selected_features == columns_of((MULTI_TIMEFRAME,), samples.feature_columns)


def test_groups_are_checked(samples: SampleSet) -> None:
    with pytest.raises(pydantic.ValidationError, match="unknown or none"):
        TrainConfig(input_groups=("orderbook",))
    with pytest.raises(ValueError, match="no column of the feature groups"):
        train_ensemble(samples, GBM.with_updates(input_groups=(BOOK_AND_TRADES,)))
