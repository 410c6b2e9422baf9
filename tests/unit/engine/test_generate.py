"""Generation and scored evaluation (engine.generate): the base is the adapter switched off, seeded sampling, one
forward that scores and answers, a loss per example, perplexity for plain text, the shared start of the prompts
computed once, forgetting on the general text."""

from __future__ import annotations

import math

import pytest
import torch

from workbench.core.config import LoraSettings, TrainSettings
from workbench.data import Example, TextSource, collate, encode_example
from workbench.engine import generate as gen
from workbench.engine import models
from workbench.engine.generate import evaluate
from workbench.engine.train import seed_everything, train


def test_evaluate_text_returns_perplexity_only(load_tiny, tiny_tokenizer):
    tok, model = tiny_tokenizer, load_tiny(16)
    source = TextSource(" ".join(["red green blue apple banana cherry"] * 4))  # 24 tokens: one block
    ev = evaluate(model, tok, source, seq_len=32)
    assert ev.accuracy is None and ev.predictions == []
    assert ev.perplexity == pytest.approx(math.exp(ev.eval_loss))
    ids = torch.tensor([tok(source.text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        reference = model(input_ids=ids, labels=ids).loss.item()  # every token counts for plain text
    assert ev.eval_loss == pytest.approx(reference, rel=1e-4)


def test_evaluate_by_perplexity_skips_generation(load_tiny, tiny_tokenizer, tiny_task):
    model = load_tiny(16)
    examples = tiny_task[:4]
    by_ppl = evaluate(model, tiny_tokenizer, examples, seq_len=32, scoring="perplexity")
    assert by_ppl.accuracy is None and by_ppl.predictions == []
    assert by_ppl.perplexity == pytest.approx(math.exp(by_ppl.eval_loss))
    by_em = evaluate(model, tiny_tokenizer, examples, seq_len=32, scoring="exact_match")
    assert by_em.eval_loss == pytest.approx(by_ppl.eval_loss)  # same loss, only the scoring differs
    assert by_em.accuracy is not None and len(by_em.predictions) == 4


@pytest.mark.parametrize("bits", [16, 4])
def test_generation_hands_the_output_head_a_contiguous_input(load_tiny, tiny_model_dir, tiny_tokenizer, bits):
    """Why QLoRA answered at 2 tok/s: transformers hands the head hidden[:, -1:, :], a non-contiguous view,
    and torch multiplies a frozen weight by it through expanded copies. load_model's hook makes it
    contiguous; the same model loaded plainly shows the view the hook exists for (so this check can fail)."""
    from transformers import AutoModelForCausalLM

    from workbench.engine.generate import DecodeSettings, generate

    def head_inputs(model) -> list[bool]:
        seen = []
        model.get_output_embeddings().register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous()))
        generate(model, tiny_tokenizer, ["Review: good", "Review: a much longer prompt here"], DecodeSettings(4))
        return seen

    ours = head_inputs(models.attach_lora(load_tiny(bits), LoraSettings(rank=4), bits))
    assert ours and all(ours)
    plain = head_inputs(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    assert not all(plain)


def test_a_speed_is_quoted_only_for_answers_long_enough_to_measure_one():
    from workbench.engine.generate import MIN_TOKENS_FOR_SPEED, Generation

    short = Generation("positive", 0.7, 1).summary()
    assert short.startswith("1 token in 0.7 s") and "tok/s" not in short and "prompt" in short
    long = Generation("x" * 40, 2.0, MIN_TOKENS_FOR_SPEED * 4).summary()
    assert long == f"{MIN_TOKENS_FOR_SPEED * 4} tokens in 2.0 s · {MIN_TOKENS_FOR_SPEED * 2:.1f} tok/s"


def test_a_shared_start_longer_than_the_rest_of_each_prompt(load_tiny, tiny_tokenizer, monkeypatch):
    """The shared start of the prompts comes from one cache, and each row runs only the rest of its prompt: the
    same losses and answers as the path without it (a loss forward, then transformers' generate), here where the
    shared start is longer than what follows it and the rows differ in length."""
    model = models.attach_lora(load_tiny(16), LoraSettings(rank=4), 16)
    with torch.no_grad():  # a nonzero adapter, so the answers vary
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    frame = "Is this review positive or negative ? The one I would recommend to anyone . Review :"
    words = ["superb", "awful great", "rude", "lovely noisy broken", "fantastic", "dreadful"]
    examples = [Example(f"{frame} {w}", "positive" if i % 2 else "negative") for i, w in enumerate(words)]
    rows = gen.encode(tiny_tokenizer, examples, 64).rows
    with torch.no_grad():
        prefix = gen.shared_prefix(model, rows, torch.device("cpu"))
    assert prefix.length > max(gen.prompt_length(r) for r in rows) - prefix.length
    fused = gen.evaluate(model, tiny_tokenizer, examples, seq_len=64, batch_size=4)
    monkeypatch.setattr(gen, "split_head", lambda model: None)
    plain = gen.evaluate(model, tiny_tokenizer, examples, seq_len=64, batch_size=4)
    assert [p["prediction"] for p in fused.predictions] == [p["prediction"] for p in plain.predictions]
    assert fused.losses == pytest.approx(plain.losses, rel=1e-5)
    assert len(set(p["prediction"] for p in fused.predictions)) > 1


FAST = dict(batch_size=4, seq_len=32, warmup_steps=0)


def test_generate_base_equals_model_before_adapter(load_tiny, tiny_tokenizer, tiny_task):
    prompts = ["Review: superb", "Review: The sofa was awful .", "Review: great"]
    decode = gen.DecodeSettings(max_new_tokens=6)
    model = load_tiny(16)
    before = [g.text for g in gen.generate(model, tiny_tokenizer, prompts, decode)]
    with torch.no_grad():
        ids = tiny_tokenizer(prompts[0], return_tensors="pt")["input_ids"]
        logits_before = model(input_ids=ids).logits
    seed_everything(0)
    model = models.attach_lora(model, LoraSettings(rank=4), 16)
    train(model, tiny_tokenizer, tiny_task, TrainSettings(steps=6, lr=5e-2, **FAST))
    with torch.no_grad():
        assert not torch.allclose(model(input_ids=ids).logits, logits_before, atol=1e-3)  # the adapter does something
        with gen.adapter_off(model):
            torch.testing.assert_close(model(input_ids=ids).logits, logits_before)
    base = gen.generate(model, tiny_tokenizer, prompts, decode, base=True)
    assert [g.text for g in base] == before
    assert all(0 < g.new_tokens <= 6 and g.seconds > 0 and g.tokens_per_second > 0 for g in base)
    tuned = [g.text for g in gen.generate(model, tiny_tokenizer, prompts, decode)]
    assert tuned != before
    assert tiny_tokenizer.padding_side == "right"  # generate put it back


def test_generate_sampling_is_seeded(load_tiny, tiny_tokenizer):
    model = load_tiny(16)
    d = gen.DecodeSettings(max_new_tokens=8, temperature=1.5, top_p=1.0, seed=3)
    a = gen.generate(model, tiny_tokenizer, ["Review: superb"], d)
    b = gen.generate(model, tiny_tokenizer, ["Review: superb"], d)
    assert a[0].text == b[0].text


def test_decode_settings_validate():
    with pytest.raises(ValueError, match="max_new_tokens"):
        gen.DecodeSettings(max_new_tokens=0)
    with pytest.raises(ValueError, match="temperature"):
        gen.DecodeSettings(temperature=-1)
    assert gen.DecodeSettings().kwargs() == {"do_sample": False, "max_new_tokens": 48, "repetition_penalty": 1.0}
    with pytest.raises(ValueError, match="repetition_penalty"):
        gen.DecodeSettings(repetition_penalty=0)
    assert gen.DecodeSettings(temperature=0.7).kwargs()["do_sample"] is True


def test_evaluate_loss_perplexity_accuracy(load_tiny, tiny_tokenizer, tiny_task):
    model = load_tiny(16)
    result = gen.evaluate(model, tiny_tokenizer, tiny_task[:6], seq_len=32, batch_size=4)
    assert 0.0 <= result.accuracy <= 1.0
    assert result.perplexity == pytest.approx(math.exp(result.eval_loss), rel=1e-9)
    assert len(result.predictions) == 6
    assert set(result.to_dict()) == {"eval_loss", "perplexity", "accuracy"}
    # the eval loss is the token-weighted mean of the answer-token cross entropy, as transformers computes it
    batch = collate([encode_example(tiny_tokenizer, ex, 32) for ex in tiny_task[:6]], tiny_tokenizer.pad_token_id)
    with torch.no_grad():
        hf_loss = float(model(**batch).loss)
    assert result.eval_loss == pytest.approx(hf_loss, rel=1e-5)


def test_evaluate_refuses_when_seq_len_cuts_every_answer(load_tiny, tiny_tokenizer, tiny_task):
    # the prompts take more than 8 tokens: no answer token is left to score, and a loss of 0.0 would lie
    with pytest.raises(ValueError, match="seq_len: 8 tokens cut off the answer of every eval example"):
        gen.evaluate(load_tiny(16), tiny_tokenizer, tiny_task[:4], seq_len=8)


def test_evaluate_accuracy_is_exact_match(load_tiny, tiny_tokenizer, monkeypatch):
    examples = [
        Example("Review: superb", "positive"),
        Example("Review: awful", "negative"),
        Example("Review: great", "positive"),
        Example("Review: rude", "negative"),
    ]
    canned = iter(["Positive.", "positive", "the positive!", "NEGATIVE"])

    def fake_generate(model, tokenizer, prompts, decode=None, *, base=False, streamer=None):
        return [gen.Generation(next(canned), 0.1, 2) for _ in prompts]

    monkeypatch.setattr(gen, "generate", fake_generate)
    monkeypatch.setattr(gen, "split_head", lambda model: None)  # the path through generate()
    result = gen.evaluate(load_tiny(16), tiny_tokenizer, examples, seq_len=32, batch_size=3)
    assert [p["correct"] for p in result.predictions] == [True, False, True, True]
    assert result.accuracy == pytest.approx(0.75)
    # what scores.json keeps: the same examples in order, each named by a key every run of them shares
    assert result.correct == [True, False, True, True] and len(set(result.keys)) == 4
    assert result.keys == [gen.example_key(e) for e in examples] and result.losses[1] == result.predictions[1]["loss"]
    assert result.predictions[1].pop("loss") > 0  # each example's own answer loss
    assert result.predictions[1].pop("tokens") == 2  # "negative" and the end of turn: what the loss is a mean over
    assert result.predictions[1] == {
        "prompt": "Review: awful",
        "answer": "negative",
        "prediction": "positive",
        "correct": False,
    }


@pytest.mark.parametrize("bits", [16, 4])
def test_one_forward_scores_and_answers_as_generate_does(load_tiny, tiny_tokenizer, tiny_task, monkeypatch, bits):
    """evaluate() scores each answer and grows its greedy answer from the same forward's cache: the same loss
    and the same answers as a loss pass followed by transformers' generate (the path it takes otherwise)."""
    model = models.attach_lora(load_tiny(bits), LoraSettings(rank=4), bits)
    with torch.no_grad():  # a nonzero adapter, so base and LoRA answer differently
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    for base in (True, False):
        fused = gen.evaluate(model, tiny_tokenizer, tiny_task, seq_len=32, batch_size=5, base=base)
        with monkeypatch.context() as m:
            m.setattr(gen, "split_head", lambda model: None)
            plain = gen.evaluate(model, tiny_tokenizer, tiny_task, seq_len=32, batch_size=5, base=base)
        assert fused.eval_loss == pytest.approx(plain.eval_loss, rel=1e-5)
        assert [p["prediction"] for p in fused.predictions] == [p["prediction"] for p in plain.predictions]
        assert fused.accuracy == plain.accuracy
        assert [p["loss"] for p in fused.predictions] == pytest.approx([p["loss"] for p in plain.predictions], rel=1e-5)


def test_each_example_gets_its_own_loss(load_tiny, tiny_tokenizer, tiny_task):
    """The per-example losses (for the best and worst held-out examples) are each example's answer loss alone,
    whatever batch it was scored in."""
    model = load_tiny(16)
    together = gen.evaluate(model, tiny_tokenizer, tiny_task[:5], seq_len=32, batch_size=5).predictions
    for example, scored in zip(tiny_task[:5], together):
        alone = gen.evaluate(model, tiny_tokenizer, [example], seq_len=32)
        assert scored["loss"] == pytest.approx(alone.eval_loss, rel=1e-5)
    assert len({round(p["loss"], 6) for p in together}) > 1


def test_forgetting_is_the_adapters_general_text_loss_over_its_bases(load_tiny, tiny_tokenizer):
    """Forgetting: the loss on the shipped general text with the adapter, minus the same model's with it off.
    A fresh adapter (B = 0) changes nothing, so it forgets nothing; a trained-looking one moves it."""
    from workbench.data import encode, general_text

    rows = encode(tiny_tokenizer, general_text(), 32)
    assert len(rows) > 3  # the shipped text is cut into several blocks
    model = models.attach_lora(load_tiny(16), LoraSettings(rank=4), 16)
    base_loss, none = gen.general_losses(model, tiny_tokenizer, rows, base=True)
    assert none is None and base_loss > 0
    loss, forgetting = gen.general_losses(model, tiny_tokenizer, rows, base=False)
    assert loss == pytest.approx(base_loss) and forgetting == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    loss, forgetting = gen.general_losses(model, tiny_tokenizer, rows, base=False)
    assert forgetting == pytest.approx(loss - base_loss) and abs(forgetting) > 1e-3
    assert gen.general_losses(model, tiny_tokenizer, None, base=False) == (None, None)
