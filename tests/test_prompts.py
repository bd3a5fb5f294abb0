from __future__ import annotations

from selfknow.data.records import Record
from selfknow.prompts import SYSTEM_PROMPT, Prompter, PromptStyle, continuation_token, question_body
from tests.conftest import make_records


def test_open_ended_and_choice_bodies_follow_the_reference_format():
    oe, choice = make_records(1)[0], make_records(1, "choice")[0]
    assert question_body(oe) == "Question: What is 0 + 0?"
    assert question_body(choice) == "Question:\nWhat is 0 + 0?\n\nChoices:\n  (a): 0\n  (b): 1"


def test_raw_kshot_prompts_end_with_the_answer_cue_and_exclude_the_question_itself(tokenizer):
    pool = make_records(6)
    prompter = Prompter(tokenizer, PromptStyle(chat=False, kshot=3), pool)
    prompt = prompter.render(pool[0])
    assert prompt.endswith("Question: What is 0 + 0?\nAnswer:")
    assert prompt.count("Question:") in (3, 4) and "Now, answer the next question." in prompt
    assert prompt.count("What is 0 + 0?") == 1


def test_kshot_examples_are_fixed_per_task_so_prompts_share_a_prefix(tokenizer):
    pool = make_records(8)
    prompter = Prompter(tokenizer, PromptStyle(chat=True, kshot=2, seed=3), pool)
    a, b = prompter.render(make_records(10)[8]), prompter.render(make_records(10)[9])
    shared = a[: a.index("What is 8")]
    assert b.startswith(shared) and shared.count("Question:") == 3  # two examples, then this question


def test_chat_prompts_use_the_system_prompt_and_a_generation_prompt(tokenizer):
    prompt = Prompter(tokenizer, PromptStyle(chat=True)).render(make_records(1)[0])
    assert SYSTEM_PROMPT in prompt and "SmolLM" not in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_a_record_with_its_own_prompt_keeps_it(tokenizer):
    record = Record(id="x", dataset="ct", split="test", question="q", answer="a", prompt="Q: q\nAnswer:")
    assert Prompter(tokenizer).render(record) == "Q: q\nAnswer:"


def test_option_tokens_follow_how_the_prompt_tokenizes(tokenizer):
    after_cue = continuation_token(tokenizer, "Question: x\nAnswer:", "a")
    after_newline = continuation_token(tokenizer, "<|im_start|>assistant\n", "a")
    assert after_cue == tokenizer(" a", add_special_tokens=False).input_ids[0]
    assert after_newline == tokenizer("a", add_special_tokens=False).input_ids[0]
    assert after_cue != after_newline
