"""The OpenAI-compatible API through the official `openai` client, and its parity with `polylm generate`."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import torch

from polylm.cli import main
from polylm.hf_checkpoint import load_model
from polylm.serve import ServeSettings, create_app
from polylm.templates import render_prompt
from serve_support import ServerThread, make_model_dir, metric, request, stream_events

PROMPTS = ["The river", "Le marché du village", "Привет", "东京是日本的首都。", "x"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, corpus_tokenizer):
    return make_model_dir(tmp_path_factory.mktemp("serve") / "tiny", corpus_tokenizer)


@pytest.fixture(scope="module")
def server(model_dir):
    settings = ServeSettings(model=str(model_dir), served_model_name="tiny", template="chat", max_batch=8)
    with ServerThread(create_app(settings)) as running:
        running.wait_ready()
        yield running


@pytest.fixture()
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="not-needed", max_retries=0, timeout=120)


def cli_generate(capsys, model_dir, prompt: str, *flags: str) -> dict:
    """`polylm generate --json` for one prompt."""
    capsys.readouterr()
    assert main(["generate", "--model", str(model_dir), "--prompt", prompt, "--json", *flags]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_models_health_and_page(server, client):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert request(server.url, "GET", "/health") == (200, {"status": "ok", "model": "tiny"})
    status, page = request(server.url, "GET", "/")
    assert status == 200 and "<title>PolyLM chat</title>" in page and "/v1/chat/completions" in page


@pytest.mark.parametrize("prompt", PROMPTS[:4])
def test_greedy_over_http_equals_polylm_generate(capsys, model_dir, client, prompt):
    expected = cli_generate(capsys, model_dir, prompt, "--max-new-tokens", "12")
    result = client.completions.create(model="tiny", prompt=prompt, max_tokens=12, temperature=0)
    assert result.choices[0].text == expected["text"]
    assert result.choices[0].finish_reason == expected["finish_reason"]
    assert result.usage.completion_tokens == len(expected["token_ids"])


@pytest.mark.parametrize("prompt", PROMPTS[:3])
def test_beam4_over_http_equals_polylm_generate(capsys, model_dir, client, prompt):
    flags = ["--num-beams", "4", "--early-stopping", "true", "--max-new-tokens", "10", "--num-return-sequences", "2"]
    expected = cli_generate(capsys, model_dir, prompt, *flags)
    result = client.completions.create(
        model="tiny",
        prompt=prompt,
        max_tokens=10,
        n=2,
        extra_body={"use_beam_search": True, "num_beams": 4, "early_stopping": True},
    )
    assert [c.text for c in result.choices] == [s["text"] for s in expected["sequences"]]
    assert [c.finish_reason for c in result.choices] == [s["finish_reason"] for s in expected["sequences"]]


def test_stop_strings_and_sampling_match_polylm_generate(capsys, model_dir, client):
    greedy = cli_generate(capsys, model_dir, "The river", "--max-new-tokens", "12")
    stop = greedy["text"][3:5]  # a piece of the greedy continuation: it must end there
    expected = cli_generate(capsys, model_dir, "The river", "--max-new-tokens", "12", "--stop", stop)
    result = client.completions.create(model="tiny", prompt="The river", max_tokens=12, temperature=0, stop=[stop])
    assert result.choices[0].text == expected["text"] and result.choices[0].finish_reason == "stop"

    flags = ["--do-sample", "--temperature", "0.9", "--top-k", "0", "--top-p", "0.95", "--seed", "5"]
    sampled = cli_generate(
        capsys, model_dir, "The river", "--max-new-tokens", "10", "--num-return-sequences", "3", *flags
    )
    result = client.completions.create(
        model="tiny", prompt="The river", max_tokens=10, n=3, temperature=0.9, top_p=0.95, seed=5
    )
    assert [c.text for c in result.choices] == [s["text"] for s in sampled["sequences"]]


def test_completions_n_and_prompt_lists(client):
    result = client.completions.create(model="tiny", prompt=PROMPTS[:3], max_tokens=5, n=2, temperature=0.8, seed=1)
    assert [c.index for c in result.choices] == list(range(6))
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    greedy = client.completions.create(model="tiny", prompt="The river", max_tokens=5, n=3, temperature=0)
    assert len({c.text for c in greedy.choices}) == 1 and len(greedy.choices) == 3


def test_completion_stream_equals_non_stream(client):
    kwargs = {"model": "tiny", "prompt": PROMPTS[:2], "max_tokens": 15, "n": 2, "temperature": 0.7, "seed": 11}
    whole = client.completions.create(**kwargs)
    pieces: dict[int, str] = {}
    finish: dict[int, str] = {}
    usage = None
    for chunk in client.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}):
        for choice in chunk.choices:
            pieces[choice.index] = pieces.get(choice.index, "") + choice.text
            if choice.finish_reason:
                finish[choice.index] = choice.finish_reason
        usage = chunk.usage or usage
    assert [pieces[c.index] for c in whole.choices] == [c.text for c in whole.choices]
    assert [finish[c.index] for c in whole.choices] == [c.finish_reason for c in whole.choices]
    assert usage.completion_tokens == whole.usage.completion_tokens


def test_sse_wire_format_ends_with_done(server):
    events = stream_events(server.url, "/v1/completions", {"prompt": "The river", "max_tokens": 4, "stream": True})
    assert events[-1] == "[DONE]" and all(isinstance(e, dict) for e in events[:-1])
    assert events[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    events = stream_events(
        server.url,
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "stream": True},
    )
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert events[-1] == "[DONE]" and events[-2]["choices"][0]["finish_reason"] in ("stop", "length")


def test_chat_uses_the_template_and_matches_polylm_generate(capsys, model_dir, client):
    for template in ("chat", "multialpaca"):
        expected = cli_generate(capsys, model_dir, "Bonjour !", "--template", template, "--max-new-tokens", "10")
        result = client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "Bonjour !"}],
            max_tokens=10,
            temperature=0,
            extra_body={"template": template},
        )
        assert result.choices[0].message.content == expected["text"]
        assert result.choices[0].message.role == "assistant"
        assert result.usage.prompt_tokens == len(client_tokens(model_dir, render_prompt(template, "Bonjour !")))


def client_tokens(model_dir, text):
    from polylm.tokenizer import Tokenizer

    return Tokenizer.from_dir(model_dir).encode(text)


def test_chat_multi_turn_stream_and_n(client):
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Wie geht's?"},
    ]
    kwargs = {"model": "tiny", "messages": messages, "max_tokens": 12, "n": 2, "temperature": 1.0, "seed": 3}
    whole = client.chat.completions.create(**kwargs)
    assert len(whole.choices) == 2
    streamed = {0: "", 1: ""}
    finish = {}
    for chunk in client.chat.completions.create(**kwargs, stream=True):
        for choice in chunk.choices:
            streamed[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finish[choice.index] = choice.finish_reason
    assert [streamed[0], streamed[1]] == [c.message.content for c in whole.choices]
    assert [finish[0], finish[1]] == [c.finish_reason for c in whole.choices]


def test_echo_logprobs_equal_in_process_log_likelihoods(model_dir, client):
    """echo + logprobs=1 + max_tokens=0: the prompt's token log-probs, as lm-eval's local-completions reads them."""
    model = load_model(model_dir)
    tokenizer_ids = client_tokens(model_dir, "Le marché du village est ouvert le dimanche.")
    with torch.no_grad():
        log_probs = torch.log_softmax(model(torch.tensor([tokenizer_ids])).float(), dim=-1)[0]
    expected = [float(log_probs[i - 1, tokenizer_ids[i]]) for i in range(1, len(tokenizer_ids))]

    result = client.completions.create(
        model="tiny", prompt="Le marché du village est ouvert le dimanche.", echo=True, logprobs=1, max_tokens=0
    )
    choice = result.choices[0]
    assert choice.text == "Le marché du village est ouvert le dimanche."
    assert choice.logprobs.token_logprobs[0] is None and len(choice.logprobs.token_logprobs) == len(tokenizer_ids)
    assert choice.logprobs.token_logprobs[1:] == pytest.approx(expected, abs=1e-5)
    for top, chosen in zip(choice.logprobs.top_logprobs[1:], choice.logprobs.token_logprobs[1:], strict=True):
        assert max(top.values()) >= chosen - 1e-6  # lm-eval's is_greedy compares against these

    # lm-eval's request shape: token-id prompts in a batch, max_tokens=1, scores read from [ctxlen:-1].
    batch = [tokenizer_ids, tokenizer_ids[:5]]
    result = client.completions.create(model="tiny", prompt=batch, echo=True, logprobs=1, max_tokens=1, temperature=0)
    for ids, choice in zip(batch, sorted(result.choices, key=lambda c: c.index), strict=True):
        assert len(choice.logprobs.token_logprobs) == len(ids) + 1
        assert choice.logprobs.token_logprobs[1 : len(ids)] == pytest.approx(expected[: len(ids) - 1], abs=1e-5)


def test_generated_token_logprobs(client):
    result = client.completions.create(model="tiny", prompt="The river", max_tokens=6, temperature=0, logprobs=3)
    logprobs = result.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs) == 6
    for chosen, top in zip(logprobs.token_logprobs, logprobs.top_logprobs, strict=True):
        assert chosen == pytest.approx(max(top.values()))  # greedy: the chosen token is the most likely
    assert "".join(logprobs.tokens) == result.choices[0].text
    chat = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=4,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
    )
    content = chat.choices[0].logprobs.content
    assert len(content) == chat.usage.completion_tokens and all(len(c.top_logprobs) == 2 for c in content)


def test_concurrent_requests_are_batched_and_equal_alone(server, client):
    jobs = [(p, m) for p in PROMPTS for m in (6, 14)]
    alone = [
        client.completions.create(model="tiny", prompt=p, max_tokens=m, temperature=0).choices[0].text for p, m in jobs
    ]
    steps, rows = metric(server.url, "polylm_engine_steps_total"), metric(server.url, "polylm_engine_step_rows_total")

    def one(job):
        prompt, max_tokens = job
        return (
            client.completions.create(model="tiny", prompt=prompt, max_tokens=max_tokens, temperature=0).choices[0].text
        )

    with ThreadPoolExecutor(len(jobs)) as pool:
        together = list(pool.map(one, jobs))
    assert together == alone
    new_steps = metric(server.url, "polylm_engine_steps_total") - steps
    new_rows = metric(server.url, "polylm_engine_step_rows_total") - rows
    assert new_rows / new_steps > 1.5, "concurrent requests were not batched"


def test_metrics_are_prometheus_text(server, client):
    client.completions.create(model="tiny", prompt="The river", max_tokens=3, temperature=0)
    status, text = request(server.url, "GET", "/metrics")
    assert status == 200
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert samples['polylm_requests_total{endpoint="/v1/completions",status="200"}'] >= 1
    assert samples["polylm_completion_tokens_total"] >= 3 and samples["polylm_prompt_tokens_total"] >= 1
    assert samples['polylm_request_duration_seconds_count{endpoint="/v1/completions"}'] >= 1
    assert samples["polylm_time_to_first_token_seconds_count"] >= 1
    assert "polylm_queue_length" in samples and samples["polylm_model_loaded"] == 1
    assert "# TYPE polylm_request_duration_seconds histogram" in text


def test_tokenizer_endpoints(server, model_dir):
    text = "Le marché du village"
    status, body = request(server.url, "POST", "/tokenize", {"prompt": text, "add_special_tokens": False})
    assert status == 200 and body["tokens"] == client_tokens(model_dir, text)
    assert request(server.url, "POST", "/tokenize", {"prompt": "</s>"})[1]["tokens"] == [2]
    assert request(server.url, "POST", "/detokenize", {"tokens": body["tokens"]}) == (200, {"prompt": text})
    status, info = request(server.url, "GET", "/tokenizer_info")
    assert status == 200 and info["eos_token"] == "</s>" and info["model_max_length"] == 128
    assert request(server.url, "POST", "/detokenize", {"tokens": [10**7]})[0] == 400


def test_lm_eval_local_completions_scores_equal_in_process(server, model_dir):
    """lm-eval's `local-completions` model, pointed at the server, finds its tokenizer endpoints and scores
    (context, continuation) pairs with the log-likelihoods the model gives in process."""
    pytest.importorskip("tenacity", reason="lm-eval's API models need lm-eval[api]")
    instance = pytest.importorskip("lm_eval.api.instance", reason="lm-eval is not installed")
    completions = pytest.importorskip("lm_eval.models.openai_completions")
    from polylm.tokenizer import Tokenizer

    lm = completions.LocalCompletionsAPI(base_url=server.url + "/v1/completions", model="tiny", max_length=128)
    assert type(lm.tokenizer).__name__ == "RemoteTokenizer"
    pairs = [("The man turned on the faucet, therefore", " the sink filled."), ("Il pleut, donc", " je reste.")]
    requests = [instance.Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    scores = lm.loglikelihood(requests, disable_tqdm=True)

    model, tokenizer = load_model(model_dir), Tokenizer.from_dir(model_dir)
    for (context, continuation), (score, _) in zip(pairs, scores, strict=True):
        context_ids, ids = tokenizer.encode(context), tokenizer.encode(context + continuation)  # lm-eval's split
        with torch.no_grad():
            log_probs = torch.log_softmax(model(torch.tensor([ids])).float(), dim=-1)[0]
        expected = sum(float(log_probs[i - 1, ids[i]]) for i in range(len(context_ids), len(ids)))
        assert score == pytest.approx(expected, abs=1e-4)
