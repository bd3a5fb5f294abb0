"""The forward passes behind answering, planned so that few tokens are computed.

Prompts are grouped by shared prefix (:mod:`selfknow.batching`); a group's prefix is run once and its
key/value cache broadcast to every batch of the group. Multiple choice then reads the logits of the
choice letters at the last position only. Open-ended answers are decoded greedily from the same
prefill, and a row leaves the batch (and its cache) as soon as it reaches a stop string or EOS, so no
step is spent on finished rows.

With ``samples`` > 0 each question also gets that many sampled answers (``scores["samples"]``), decoded
from the same prefill: its cache is repeated once per sample, so the prompt is run once for all of them.
A sample's randomness is seeded by the record id, the sample's number and the step, so a resumed run draws
what an uninterrupted one would.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache, PreTrainedModel
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

from selfknow.batching import Group, group_by_prefix, make_batches, pass_limits
from selfknow.data.records import LETTERS, Record
from selfknow.data.splits import rng_for
from selfknow.models import input_device
from selfknow.prompts import continuation_token

NUCLEUS_CANDIDATES = 256  # tokens searched for the top-p nucleus before sorting the whole vocabulary
Item = tuple[Record, str, list[int]]  # a record, its prompt text and the prompt's token ids
Emit = Callable[[list[Record], int], None]  # answered records of a batch, and the tokens it computed


@dataclass(frozen=True)
class AnswerConfig:
    max_new_tokens: int = 32
    batch_size: int | None = None  # rows per pass; None: sized to the device (batching.pass_limits)
    max_batch_tokens: int | None = None  # tokens a pass holds (per row its prompt and longest answer); None: sized
    stop: tuple[str, ...] = ("\n",)
    temperature: float = 0.0  # 0: greedy; otherwise nucleus sampling, seeded per record id
    top_p: float = 1.0
    seed: int = 0
    cue: tuple[int, ...] = ()  # tokens appended after the prompt for a forced reading (scores["cue_logprobs"])
    cue_read: tuple[int, ...] = ()  # the tokens whose next-token log-probs the cue reading keeps
    samples: int = 0  # sampled answers per question besides the main one (scores["samples"])
    sample_temperature: float = 1.0  # the calibration-tuning reference's sampling baseline: T = 1, top-p 0.95
    sample_top_p: float = 0.95
    token_ids: bool = False  # also keep the answer's (and samples') token ids, for a server that returns tokens

    def __post_init__(self) -> None:
        if self.samples < 0:
            raise ValueError(f"samples must be 0 or more, got {self.samples}")
        if self.samples and (self.sample_temperature <= 0 or not 0 < self.sample_top_p <= 1):
            raise ValueError("samples need a sample temperature above 0 and a top-p in (0, 1]")

    @property
    def sampling(self) -> dict[str, float | int]:
        """The settings a record's samples were drawn with, stored beside them."""
        return {
            "k": self.samples, "temperature": self.sample_temperature, "top_p": self.sample_top_p, "seed": self.seed
        }  # fmt: skip


@dataclass
class AnswerStats:
    """Token accounting of one run: what was computed, and what of it was padding or waste."""

    records: int = 0
    prompt_tokens: int = 0  # tokens of all prompts, as if each were run on its own
    computed_tokens: int = 0  # prompt tokens actually run: shared prefixes once, padding excluded
    pad_tokens: int = 0
    generated_tokens: int = 0  # generated tokens kept in answers
    sampled_tokens: int = 0  # tokens kept in sampled answers (``samples``)
    wasted_decode_tokens: int = 0  # generated tokens not kept (the stop string, EOS)
    attention_pairs: int = 0  # (query, key) pairs of the useful tokens, for FLOP accounting
    seconds: float = 0.0
    per_prefix: list[int] = field(default_factory=list)  # length of each shared prefix computed

    @property
    def useful_tokens(self) -> int:
        return self.computed_tokens + self.generated_tokens + self.sampled_tokens

    @property
    def padding_fraction(self) -> float:
        total = self.useful_tokens + self.pad_tokens + self.wasted_decode_tokens
        return (self.pad_tokens + self.wasted_decode_tokens) / total if total else 0.0


def left_pad(rows: Sequence[Sequence[int]], width: int, pad_id: int, device: torch.device):
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = 1
    return ids.to(device), mask.to(device)


def _broadcast_cache(prefix_cache: DynamicCache, rows: int) -> DynamicCache:
    """A per-batch view of a batch-1 prefix cache: expanded, not copied (the first cache update
    concatenates, which copies once); the prefix cache itself stays untouched for the next batch."""
    cache = copy.copy(prefix_cache)
    cache.layers = [copy.copy(layer) for layer in prefix_cache.layers]
    for layer in cache.layers:
        layer.keys = layer.keys.expand(rows, -1, -1, -1)
        layer.values = layer.values.expand(rows, -1, -1, -1)
    return cache


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Text before the first stop string, and whether there was one."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text, False) if cut < 0 else (text[:cut], True)


def eos_ids(tokenizer, generation_eos: int | Sequence[int] | None) -> set[int]:
    """Every token that ends an answer: the model's generation EOS ids and the tokenizer's."""
    eos = {generation_eos} if isinstance(generation_eos, int) else set(generation_eos or [])
    if tokenizer.eos_token_id is not None:
        eos.add(tokenizer.eos_token_id)
    return eos


def answer_text(tokenizer, tokens: Sequence[int], eos: set[int], stops: Sequence[str]) -> tuple[str, int]:
    """The answer in generated tokens (up to the first stop string or EOS) and how many tokens it takes; a
    token that straddles the stop (".\\n") counts when it adds answer text before the stop."""
    end = next((k for k, t in enumerate(tokens) if t in eos), len(tokens))
    text = cut_at_stop(tokenizer.decode(tokens[:end], skip_special_tokens=True).lstrip(), stops)
    answer = text[0].strip()
    kept = 0
    while kept < end and len(tokenizer.decode(tokens[:kept], skip_special_tokens=True).strip()) < len(answer):
        kept += 1
    return answer, kept


class IncrementalText:
    """A row's text grown one token at a time. Each step decodes a short window (the tokens since the last
    complete piece of text, plus the new one) rather than the whole answer; text is added only once the
    window decodes to whole characters (a multi-byte character can span tokens)."""

    def __init__(self, tokenizer):
        self.tokenizer, self.tokens, self.text = tokenizer, [], ""
        self._prefix = self._read = 0  # the window's start, and where its already-added text ends

    def add(self, token: int) -> str:
        self.tokens.append(token)
        seen = self.tokenizer.decode(self.tokens[self._prefix : self._read], skip_special_tokens=True)
        grown = self.tokenizer.decode(self.tokens[self._prefix :], skip_special_tokens=True)
        if len(grown) > len(seen) and not grown.endswith("\ufffd"):
            self.text += grown[len(seen) :]
            self._prefix, self._read = self._read, len(self.tokens)
        return self.text


class LetterIds:
    """The token each choice letter is after a given prompt, cached per prompt ending."""

    def __init__(self, tokenizer):
        self.tokenizer, self._cache = tokenizer, {}

    def __call__(self, prompt: str, n: int) -> list[int]:
        key = (prompt[-64:], n)
        if key not in self._cache:
            self._cache[key] = [continuation_token(self.tokenizer, prompt, c) for c in LETTERS[:n]]
        return self._cache[key]


def nucleus_logits(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Logits as nucleus sampling sees them: tempered, and -inf outside the top-p nucleus (the smallest
    set of most likely tokens holding ``top_p`` of the mass, as transformers' TopPLogitsWarper keeps).
    The nucleus is looked for among the top ``NUCLEUS_CANDIDATES`` tokens first, since sorting the whole
    vocabulary for every sample at every step costs more than the model's forward pass on a CPU; rows
    whose nucleus is wider fall back to the full sort."""
    warped = TemperatureLogitsWarper(temperature)(None, logits.float())
    if top_p >= 1:
        return warped
    top, index = warped.topk(min(NUCLEUS_CANDIDATES, warped.shape[-1]), dim=-1)
    probs = (top - warped.logsumexp(-1, keepdim=True)).exp()
    before = probs.cumsum(-1) - probs  # the mass of the more likely tokens
    nucleus = torch.full_like(warped, -float("inf")).scatter(-1, index, top.masked_fill(before >= top_p, -float("inf")))
    wide = before[:, -1] + probs[:, -1] < top_p
    if wide.any():
        nucleus[wide] = TopPLogitsWarper(top_p)(None, warped[wide])
    return nucleus


def seeded_generator(seed: int, *parts: object, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator seeded by the run's seed and what is drawn (record id, lane, step)."""
    return torch.Generator(device=device).manual_seed(rng_for(seed, *parts).getrandbits(63))


def sample_letters(record: Record, letter_logits: torch.Tensor, config: AnswerConfig) -> dict:
    """Sampled letters: draws from the letters' softmax, warped as open-ended samples are, so sampling
    estimators read a multiple-choice record as they read an open-ended one (one step per sample). Seeded by
    the record id and the sample's number, so every engine that reads the same letter logits draws alike."""
    warped = nucleus_logits(letter_logits[None], config.sample_temperature, config.sample_top_p)[0]
    raw, kept = letter_logits.log_softmax(-1), warped.log_softmax(-1)
    top, samples = float(kept.max()), []
    for j in range(1, config.samples + 1):
        pick = int(torch.multinomial(kept.exp(), 1, generator=seeded_generator(config.seed, record.id, "sample", j, 0)))
        samples.append({"text": LETTERS[pick], "token_logprobs": [float(raw[pick])], "warped_max_logprobs": [top]})
    return {"samples": samples, "sampling": config.sampling}


class Answerer:
    """Runs the forward passes for one (model, tokenizer, config) and keeps the token accounting."""

    def __init__(self, model: PreTrainedModel, tokenizer, config: AnswerConfig):
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.device = input_device(model)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.eos = eos_ids(tokenizer, model.generation_config.eos_token_id)
        self.stats = AnswerStats()
        self.letter_ids = LetterIds(tokenizer)

    @torch.inference_mode()
    def run(self, items: Sequence[Item], emit: Emit) -> None:
        """Answer items of one format (all multiple choice, or all open-ended), batch by batch."""
        if not items:
            return
        generate = items[0][0].format != "choice"
        seqs = [ids for _, _, ids in items]
        sized_rows, sized_tokens = pass_limits(self.model, keep_cache=generate)
        max_rows, max_tokens = self.config.batch_size or sized_rows, self.config.max_batch_tokens or sized_tokens
        if generate and self.config.samples:  # each row's cache is repeated once per sample after the prefill
            lanes = 1 + self.config.samples
            max_rows, max_tokens = max(1, max_rows // lanes), max(1, max_tokens // lanes)
        for group in self._groups(seqs, generate):
            shared = group.prefix_len
            prefix_cache = self._prefix(seqs[group.rows[0]][:shared]) if shared else None
            lengths = [len(s) - shared for s in seqs]
            reserved = shared + (self.config.max_new_tokens if generate else 0)
            for batch in make_batches(group.rows, lengths, max_rows=max_rows, max_tokens=max_tokens, reserved=reserved):
                rows = [items[i] for i in batch.rows]
                logits, cache, mask, last = self._prefill(
                    [seqs[i][shared:] for i in batch.rows], batch.width, shared, prefix_cache, keep_cache=generate
                )
                suffix = [lengths[i] for i in batch.rows]
                self.stats.computed_tokens += sum(suffix)
                self.stats.pad_tokens += batch.pad_tokens(lengths)
                self.stats.attention_pairs += sum(n * shared + n * (n + 1) // 2 for n in suffix)
                if generate:
                    done, generated = self._decode(rows, logits, cache, mask, last)
                else:
                    done, generated = self._read_letters(rows, logits), 0
                emit(done, sum(suffix) + generated)

    def _groups(self, seqs: Sequence[Sequence[int]], generate: bool) -> list[Group]:
        """Prefix groups, unless a sliding attention window could reach across the padding that sits
        between a shared prefix and a suffix (windows count cache slots, padding included)."""
        window = getattr(self.model.config, "sliding_window", None)
        longest = max(len(s) for s in seqs) + (self.config.max_new_tokens if generate else 0)
        if window and longest > window:
            return [Group(list(range(len(seqs))), 0)]
        return group_by_prefix(seqs)

    def _prefix(self, ids: list[int]) -> DynamicCache:
        self.stats.computed_tokens += len(ids)
        self.stats.attention_pairs += len(ids) * (len(ids) + 1) // 2
        self.stats.per_prefix.append(len(ids))
        prefix = torch.tensor([ids], device=self.device)
        return self.model(input_ids=prefix, use_cache=True, logits_to_keep=1).cache

    def _prefill(self, rows, width: int, shared: int, prefix_cache, keep_cache: bool):
        """Logits at each row's last prompt token; left padding sits between prefix and suffix."""
        ids, mask = left_pad(rows, width, self.pad_id, self.device)
        positions = (shared + mask.cumsum(-1) - 1).clamp(min=shared)
        cache = None
        if prefix_cache is not None:
            cache = _broadcast_cache(prefix_cache, len(rows))
            mask = torch.cat([mask.new_ones(len(rows), shared), mask], dim=1)
        elif keep_cache:
            cache = DynamicCache(config=self.model.config)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            cache=cache,
            use_cache=cache is not None,
            logits_to_keep=1,
        )
        return out.logits[:, -1], out.cache, mask, positions[:, -1]

    def _read_letters(self, rows: Sequence[Item], logits: torch.Tensor) -> list[Record]:
        done = []
        for row, (record, prompt, _) in enumerate(rows):
            letter_logits = logits[row, self.letter_ids(prompt, len(record.choices or []))].float()
            letter = LETTERS[int(letter_logits.argmax())]
            scores = {"choice_logits": letter_logits.tolist()}
            if self.config.samples:
                scores.update(sample_letters(record, letter_logits.cpu(), self.config))
            done.append(answered_record(record, prompt, letter, scores))
        return done

    def _read_cue(self, cache, mask, last) -> list[list[float]]:
        """Log-probs of ``cue_read`` after the prompt and the cue; the cache is cut back to the prompt."""
        cue = torch.tensor(self.config.cue, device=self.device)
        rows, width = mask.shape[0], len(self.config.cue)
        if hasattr(cache, "activate_past_recording"):  # sliding-window layers keep the states the cut restores
            cache.activate_past_recording()
        out = self.model(
            input_ids=cue.expand(rows, -1),
            attention_mask=torch.cat([mask, mask.new_ones(rows, width)], dim=1),
            position_ids=last[:, None] + torch.arange(1, width + 1, device=self.device),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        cache.crop(-width)  # cut the cue back off the cache
        self.stats.computed_tokens += rows * width
        scores = out.logits[:, -1].float().log_softmax(-1)[:, list(self.config.cue_read)]
        return scores.tolist()

    def _generator(self, *parts: object, device: torch.device | str = "cpu") -> torch.Generator:
        return seeded_generator(self.config.seed, *parts, device=device)

    def _choose(
        self, lanes: Sequence[tuple[Record, int]], logits: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The next token of each lane (a record's main answer, number 0, or one of its samples), its
        log-probability under the model, and the largest log-probability of the distribution it was drawn from
        (after temperature and top-p; the reference's sampling likelihood reads it). The main answer is the
        argmax, or a nucleus sample when ``temperature`` > 0; samples use the sample settings. Every draw is
        seeded by the record id, the lane and the step, so a resumed run samples what an uninterrupted one
        would. Samples are drawn by the Gumbel-max trick with noise seeded per token, on the logits' device:
        the draw changes only if rounding moves the two best perturbed logits past each other, where drawing
        at a seeded point of the cumulative distribution would change whenever rounding in a batch of other
        questions moves a boundary past that point, so a resumed run (other batches) draws what an
        uninterrupted one did."""
        config = self.config
        logprobs = logits.float().log_softmax(-1)
        tops, picks = logprobs.max(-1)
        main = [j for j, (_, lane) in enumerate(lanes) if lane == 0]
        if config.temperature > 0 and main:
            warped = nucleus_logits(logits[main], config.temperature, config.top_p)
            tops[main] = warped.log_softmax(-1).max(-1).values
            probs = warped.softmax(-1).cpu()
            for k, j in enumerate(main):
                generator = self._generator(lanes[j][0].id, step)
                picks[j] = int(torch.multinomial(probs[k], 1, generator=generator))
        samples = [j for j, (_, lane) in enumerate(lanes) if lane > 0]
        if samples:
            warped = nucleus_logits(logits[samples], config.sample_temperature, config.sample_top_p)
            tops[samples] = warped.log_softmax(-1).max(-1).values
            noise = torch.stack(
                [
                    torch.rand(
                        warped.shape[-1],
                        generator=self._generator(lanes[j][0].id, "sample", lanes[j][1], step, device=warped.device),
                        device=warped.device,
                    )
                    for j in samples
                ]
            )
            gumbel = -(-noise.clamp_min(torch.finfo(noise.dtype).tiny).log()).log()
            picks[samples] = (warped + gumbel).argmax(-1)
        return picks, logprobs.gather(1, picks[:, None])[:, 0], tops

    def _decode(self, rows: Sequence[Item], logits, cache, mask, last) -> tuple[list[Record], int]:
        """Greedy or sampled decoding; a lane stops at EOS or at a stop string that follows some text
        (models often open with a newline), and then leaves the batch. Each row has one lane for its answer
        and one per sample, sharing the row's prefill. Each step moves every lane's token and
        log-probabilities to the host in one transfer, and tests the stop strings on text decoded
        incrementally, so a step's host work does not grow with the answer."""
        cue = self._read_cue(cache, mask, last) if self.config.cue else None
        per_row = 1 + self.config.samples
        if per_row > 1:
            cache.batch_repeat_interleave(per_row)
            logits, mask, last = (t.repeat_interleave(per_row, dim=0) for t in (logits, mask, last))
        lanes = [(record, lane) for record, _, _ in rows for lane in range(per_row)]
        texts = [IncrementalText(self.tokenizer) for _ in lanes]
        logprobs: list[list[float]] = [[] for _ in lanes]
        tops: list[list[float]] = [[] for _ in lanes]
        active = list(range(len(lanes)))
        positions = last
        reach = [p + 1 for p in last.tolist()]  # keys each active lane's next token attends to
        for step in range(self.config.max_new_tokens):
            best, picked, top = self._choose([lanes[j] for j in active], logits, step)
            host = torch.stack([best.double(), picked.double(), top.double()]).tolist()  # one device-to-host copy
            keep = []
            for j, lane in enumerate(active):
                token = int(host[0][j])
                logprobs[lane].append(host[1][j])
                tops[lane].append(host[2][j])
                text = texts[lane].add(token)
                if token not in self.eos and not cut_at_stop(text.lstrip(), self.config.stop)[1]:
                    keep.append(j)
            if not keep or step == self.config.max_new_tokens - 1:
                break
            if len(keep) < len(active):
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                mask, positions, best = mask[index], positions[index], best[index]
                active, reach = [active[j] for j in keep], [reach[j] for j in keep]
            mask = torch.cat([mask, mask.new_ones(len(active), 1)], dim=1)
            positions = positions + 1
            reach = [r + 1 for r in reach]
            self.stats.attention_pairs += sum(reach)
            logits = self.model(
                input_ids=best[:, None],
                attention_mask=mask,
                position_ids=positions[:, None],
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            ).logits[:, -1]
        done, kept_main, kept_samples = [], 0, 0
        for row, (record, prompt, _) in enumerate(rows):
            answers = []
            for lane in range(row * per_row, (row + 1) * per_row):
                text, kept = answer_text(self.tokenizer, texts[lane].tokens, self.eos, self.config.stop)
                answer = {
                    "text": text,
                    "token_logprobs": logprobs[lane][:kept],
                    "warped_max_logprobs": tops[lane][:kept],
                }
                if self.config.token_ids:
                    answer["token_ids"] = texts[lane].tokens[:kept]
                answers.append(answer)
            main, drawn = answers[0], answers[1:]
            kept_main += len(main["token_logprobs"])
            kept_samples += sum(len(sample["token_logprobs"]) for sample in drawn)
            scores = {"token_logprobs": main["token_logprobs"], **({"cue_logprobs": cue[row]} if cue else {})}
            if "token_ids" in main:
                scores["token_ids"] = main["token_ids"]
            if drawn:
                scores["samples"], scores["sampling"] = drawn, self.config.sampling
            done.append(answered_record(record, prompt, main["text"], scores))
        generated = sum(len(t.tokens) for t in texts)
        self.stats.generated_tokens += kept_main
        self.stats.sampled_tokens += kept_samples
        self.stats.wasted_decode_tokens += generated - kept_main - kept_samples
        return done, generated


def answered_record(record: Record, prompt: str, output: str, scores: dict) -> Record:
    """A copy with the new answer; grades and confidences of an older answer no longer apply."""
    return dataclasses.replace(
        record, prompt=prompt, output=output, scores=scores, correct=None, grader=None, confidences={}
    )
