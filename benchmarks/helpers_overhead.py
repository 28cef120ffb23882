"""How much time the helpers add over raw transformers on the same inputs (a ratio from one run).

Runs on the stand-in checkpoints (or real weights where the private cache links them), alternating the
raw and helper paths so both see the same machine load, and prints a table of medians and ratios.
Ratios are what to quote: absolute times on a shared CPU mean little.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from threading import Thread

MODEL_ID = "Qwen/Qwen2-7B-Instruct"
CONVERSATIONS = [
    [{"role": "user", "content": "Give me a short introduction to large language models."}],
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 2 + 2?"}],
    [{"role": "user", "content": "你好，请介绍一下你自己。"}],  # noqa: RUF001
]


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()

    from qwen_docs_helpers.standins import offline_env, prepare_hub

    os.environ.update(offline_env())  # before anything imports huggingface_hub
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    prepare_hub([MODEL_ID], progress=lambda line: print(line, file=sys.stderr))

    from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer

    from qwen_docs_helpers import generate_replies, load_model, stream_reply

    greedy = dict(max_new_tokens=args.max_new_tokens, do_sample=False)

    def raw_load() -> object:
        return AutoModelForCausalLM.from_pretrained(
            MODEL_ID, dtype="auto", device_map="auto"
        ), AutoTokenizer.from_pretrained(MODEL_ID, padding_side="left")

    def helper_load() -> object:
        return load_model(MODEL_ID)

    model, tokenizer = load_model(MODEL_ID)

    def raw_batch() -> list[str]:
        texts = tokenizer.apply_chat_template(CONVERSATIONS, tokenize=False, add_generation_prompt=True)
        inputs = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left").to(model.device)
        out = model.generate(**inputs, **greedy)
        return tokenizer.batch_decode(out[:, inputs.input_ids.shape[1] :], skip_special_tokens=True)

    def helper_batch() -> list[str]:
        return generate_replies(model, tokenizer, CONVERSATIONS, **greedy)

    def raw_stream() -> str:
        text = tokenizer.apply_chat_template(CONVERSATIONS[0], tokenize=False, add_generation_prompt=True)
        inputs = tokenizer([text], return_tensors="pt").to(model.device)
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        thread = Thread(target=model.generate, kwargs=dict(**inputs, streamer=streamer, **greedy))
        thread.start()
        text = "".join(streamer)
        thread.join()
        return text

    def helper_stream() -> str:
        with stream_reply(model, tokenizer, CONVERSATIONS[0], **greedy) as stream:
            return "".join(stream)

    if raw_batch() != helper_batch() or raw_stream() != helper_stream():
        print("the raw and helper paths disagree on greedy output; timings would compare different work")
        return 1

    rows = []
    for name, raw, helper, repeats in [
        ("load model + tokenizer", raw_load, helper_load, max(2, args.repeats // 3)),
        (f"batch of {len(CONVERSATIONS)}, {args.max_new_tokens} new tokens", raw_batch, helper_batch, args.repeats),
        (f"stream 1 reply, {args.max_new_tokens} new tokens", raw_stream, helper_stream, args.repeats),
    ]:
        raw_times, helper_times = [], []
        for turn in range(repeats):  # alternate, and swap which goes first, so both see the same conditions
            pair = [(raw, raw_times), (helper, helper_times)]
            for run, times in pair if turn % 2 == 0 else pair[::-1]:
                times.append(median_seconds(run, 1))
        rows.append((name, statistics.median(raw_times), statistics.median(helper_times)))

    print(f"model: {MODEL_ID} ({'stand-in' if getattr(model.config, 'qwen_docs_standin', None) else 'real weights'})")
    print(f"{'operation':<42} {'raw (s)':>9} {'helpers (s)':>12} {'ratio':>7}")
    for name, raw_s, helper_s in rows:
        print(f"{name:<42} {raw_s:>9.3f} {helper_s:>12.3f} {helper_s / raw_s:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
