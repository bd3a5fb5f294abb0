from __future__ import annotations

import asyncio
import dataclasses

import httpx
import pytest
from fastapi.testclient import TestClient

from selfknow.abstention import AbstentionThreshold
from selfknow.ask import Asker
from selfknow.service import ServiceConfig, create_app
from selfknow.service.app import ABSTAIN_TEXT
from tests.conftest import serving

LIMITS = ServiceConfig(max_batch=4, batch_window_ms=5, max_pending=8, max_body_bytes=4096, max_prompt_tokens=64)


@pytest.fixture(scope="module")
def asker(tiny_llama_dir) -> Asker:
    return Asker.from_model(str(tiny_llama_dir), max_new_tokens=8, device="cpu")


@pytest.fixture
def client(asker):
    with TestClient(create_app(asker, LIMITS, model_name="tiny")) as client:
        yield client


def test_health_and_models_name_what_is_served(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "tiny" and health["estimator"] == "query"
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["tiny"]


def test_ask_gives_the_base_models_answer_and_its_confidence(client, asker):
    direct = asker.ask("What is the capital of Peru?")[0]
    reply = client.post("/v1/ask", json={"question": "What is the capital of Peru?"}).json()
    assert reply["answer"] == direct.answer
    assert reply["confidence"] == pytest.approx(direct.confidence, abs=1e-5)
    assert 0 <= reply["confidence"] <= 1 and reply["estimator"] == "query" and reply["abstained"] is False


def test_chat_completion_is_openai_shaped_with_a_confidence(client, asker):
    body = client.post(
        "/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": "What is 2 + 2?"}]}
    ).json()
    choice = body["choices"][0]
    assert body["object"] == "chat.completion" and body["model"] == "tiny"
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == asker.ask("What is 2 + 2?")[0].answer
    assert choice["finish_reason"] in ("stop", "length")
    assert 0 <= body["confidence"] <= 1 and body["confidence"] == choice["confidence"]
    assert body["estimator"] == "query"
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_completions_take_several_prompts_each_with_a_confidence(client):
    body = client.post("/v1/completions", json={"prompt": ["What is 1 + 1?", "Name a red fruit."], "max_tokens": 4})
    choices = body.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1]
    assert all(0 <= c["confidence"] <= 1 for c in choices)
    assert body.json()["usage"]["completion_tokens"] <= 8


@pytest.mark.parametrize(
    "payload, status, words",
    [
        ('{"question": "unclosed', 400, "malformed JSON"),
        ({"question": "Hi?", "colour": "blue"}, 422, "unknown field 'colour'"),
        ({}, 422, "question"),
        ({"question": "   "}, 400, "empty"),
        ({"question": "Hi?", "max_tokens": 10_000}, 400, "cap"),
        ({"question": "word " * 100}, 413, "tokens"),
        ({"question": "x" * 5000}, 413, "bytes"),
    ],
)
def test_bad_requests_get_the_right_status_and_a_clear_message(client, payload, status, words):
    if isinstance(payload, str):
        response = client.post("/v1/ask", content=payload, headers={"content-type": "application/json"})
    else:
        response = client.post("/v1/ask", json=payload)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "extra, status, words",
    [
        ({"model": "gpt-4"}, 404, "not served"),
        ({"top_p": 0.9}, 400, "temperature above 0"),
        ({"stream": True}, 400, "streaming"),
        ({"n": 3}, 400, "n must be 1"),
        ({"n": 9, "temperature": 1.0}, 400, "at most 4 samples"),
        ({"logprobs": True, "top_logprobs": 2}, 422, "top_logprobs"),
        ({"logit_bias": {}}, 422, "unknown field 'logit_bias'"),
    ],
)
def test_unsupported_generation_settings_are_refused_not_ignored(client, extra, status, words):
    payload = {"messages": [{"role": "user", "content": "Hi?"}], **extra}
    response = client.post("/v1/chat/completions", json=payload)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]["message"]


def test_logprobs_are_the_answers_tokens_in_both_shapes(client, asker):
    direct = asker.ask("What is 2 + 2?")[0]
    chat = client.post(
        "/v1/chat/completions", json={"messages": [{"role": "user", "content": "What is 2 + 2?"}], "logprobs": True}
    ).json()["choices"][0]
    content = chat["logprobs"]["content"]
    assert "".join(t["token"] for t in content).strip() == direct.answer
    assert [t["logprob"] for t in content] == pytest.approx(list(direct.token_logprobs))
    legacy = client.post("/v1/completions", json={"prompt": "What is 2 + 2?", "logprobs": 0}).json()["choices"][0]
    assert legacy["logprobs"]["token_logprobs"] == pytest.approx(list(direct.token_logprobs))


def test_sampled_choices_are_seeded_and_carry_no_confidence(client):
    def sample(seed: int, question: str = "Name a colour.") -> list[tuple[str, list[float]]]:
        payload = {"messages": [{"role": "user", "content": question}], "temperature": 1.0, "n": 3, "seed": seed}
        body = client.post("/v1/chat/completions", json={**payload, "logprobs": True}).json()
        assert all(c["confidence"] is None for c in body["choices"]) and "confidence" not in body
        return [(c["message"]["content"], [t["logprob"] for t in c["logprobs"]["content"]]) for c in body["choices"]]

    first = sample(7)
    assert len(first) == 3 and len({text for text, _ in first}) > 1  # T = 1 on random weights
    assert sample(7) == first  # the same seed draws the same answers
    assert sample(8) != first


def test_multi_turn_chats_are_refused_with_a_reason(client):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    response = client.post("/v1/chat/completions", json={"messages": messages})
    assert response.status_code == 400 and "one user message" in response.json()["error"]["message"]


def test_the_service_abstains_below_the_threshold(asker):
    chosen = AbstentionThreshold(0.0, target_risk=0.1, delta=0.1, coverage=1.0, risk=0.0, risk_upper_bound=0.0, n=1)
    for threshold, abstains in ((1.01, True), (0.0, False)):
        asker.threshold = dataclasses.replace(chosen, threshold=threshold)
        try:
            with TestClient(create_app(asker, LIMITS)) as client:
                chat = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi?"}]})
                ask = client.post("/v1/ask", json={"question": "Hi?"}).json()
        finally:
            asker.threshold = None
        body = chat.json()
        assert body["abstained"] is abstains and ask["abstained"] is abstains
        assert ask["threshold"] == threshold
        shown = body["choices"][0]["message"]["content"]
        assert (shown == ABSTAIN_TEXT) is abstains
        assert body["choices"][0]["answer"] == ask["answer"]  # the withheld answer is still reported


def test_under_load_the_queue_refuses_with_503_and_serves_every_accepted_request(asker):
    app = create_app(asker, dataclasses.replace(LIMITS, max_pending=3, max_batch=2))

    async def burst():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                jobs = [client.post("/v1/ask", json={"question": f"What is {i} + {i}?"}) for i in range(12)]
                return await asyncio.gather(*jobs)

    responses = asyncio.run(burst())
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503} and codes.count(503) > 0 and codes.count(200) >= 3
    for response in responses:
        if response.status_code == 200:
            assert response.json()["question"].startswith("What is")
        else:
            assert "busy" in response.json()["error"]["message"] and response.headers["retry-after"] == "1"
    assert app.state.batcher.pending == 0


def test_a_real_server_answers_the_openai_client(tiny_llama_dir, tmp_path):
    openai = pytest.importorskip("openai")
    with serving(tiny_llama_dir, tmp_path / "server.log") as url:
        client = openai.OpenAI(base_url=url, api_key="unused")
        response = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "What is the capital of Peru?"}], max_tokens=8
        )
        assert isinstance(response.choices[0].message.content, str)
        assert 0 <= response.model_extra["confidence"] <= 1
        with pytest.raises(openai.NotFoundError, match="not served"):
            client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "Hi?"}])
