"""The batched query pass: option logits, last-token states and contrast pairs equal one-at-a-time passes."""

from __future__ import annotations

import torch

from selfknow.confidence.features import forward_queries
from selfknow.confidence.query import QueryText
from selfknow.models import load_model


def test_contrast_pairs_equal_running_each_option_token_after_the_prompt(tiny_model_dir):
    model, tokenizer = load_model(str(tiny_model_dir), device="cpu")
    texts = ["12 + 30 = 42. Alice:", "Grader: Bob\n\n7 + 5 = 13\n\nScore:", "1 + 1 = 2. Bob:"]
    queries = [QueryText(t, tokenizer(t).input_ids, 0, 0) for t in texts]
    options = [(11, 12), (13, 14), (15, 16)]
    features = forward_queries(model, tokenizer, queries, hidden=True, contrast=True, options=options)
    assert features.contrast.shape[:3] == (3, model.config.num_hidden_layers + 1, 2)
    with torch.no_grad():
        for i, query in enumerate(queries):
            alone = model(input_ids=torch.tensor([query.ids]), output_hidden_states=True)
            expected_logits = alone.logits[0, -1, list(options[i])]
            torch.testing.assert_close(features.option_logits[i], expected_logits, atol=2e-3, rtol=1e-3)
            last = torch.stack([h[0, -1] for h in alone.hidden_states]).half()
            torch.testing.assert_close(features.hidden[i], last, atol=2e-3, rtol=1e-2)
            for c in (0, 1):
                with_option = model(input_ids=torch.tensor([[*query.ids, options[i][c]]]), output_hidden_states=True)
                states = torch.stack([h[0, -1] for h in with_option.hidden_states]).half()
                torch.testing.assert_close(features.contrast[i, :, c], states, atol=2e-3, rtol=1e-2)
