"""The zero-shot uncertainty query: the base model asked whether its own answer is correct."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from selfknow.confidence.base import Context, Estimator, register
from selfknow.confidence.features import base_query_features
from selfknow.data.records import Record


@register("query")
class ZeroShotQuery(Estimator):
    """P(correct) = softmax over the (i) no / (ii) yes option logits of the base model, raw text query."""

    work = "1 query pass (prompt, answer, question)"

    uses_model = True
    style = "raw"

    def score(self, records: Sequence[Record], context: Context) -> np.ndarray:
        self.check_own_answers(records, context)
        return base_query_features(records, context, self.style).p_correct().numpy()


@register("query-chat")
class ZeroShotChatQuery(ZeroShotQuery):
    """The same query inside the chat template (question and answer as turns, the query as a user turn)."""

    style = "chat"
