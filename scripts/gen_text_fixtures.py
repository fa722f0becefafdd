"""Reference fixtures for crates/text, from transformers' CLIPTokenizer and
CLIPTextModel.

    cargo xtask py scripts/gen_text_fixtures.py

Writes crates/text/tests/fixtures/:

- clip-vocab/: the real CLIP vocabulary (49408 tokens) as the Stable
  Diffusion 1.x tokenizer folders ship it, vocab.json and merges.txt
  gzipped (vocab.json.gz, merges.txt.gz; the tests unpack them), with
  tokenizer_config.json and special_tokens_map.json. It is derived from
  open_clip's bpe_simple_vocab_16e6.txt.gz as OpenAI's CLIP tokenizer does:
  the 256 byte tokens, the same with `</w>`, merges 1..48894 joined, then
  `<|startoftext|>` and `<|endoftext|>`.
- sd1-tiny/ and sd2-tiny/: pipeline-style folders (model_index.json,
  text_encoder/ with config.json and model.safetensors, tokenizer/) of tiny
  random CLIP text models (hidden size 32, 2 layers, 4 heads) over a small
  vocabulary: the real one cut to its first 1000 merges (1514 tokens).
  sd1-tiny is like Stable Diffusion 1.x: quick_gelu, pad = EOS, the legacy
  eos_token_id 2 (pooled output at the argmax of the ids), weights named
  `text_model.*` with the stray `position_ids` buffer, tokenizer as
  vocab.json + merges.txt. sd2-tiny is like 2.x: exact-erf gelu, pad `!`,
  eos_token_id set to the real EOS id, weights and tokenizer as transformers
  5 saves them (no `text_model.` prefix; tokenizer.json +
  tokenizer_config.json).
- tokens.json: for each tokenizer folder and prompt, the input ids and
  attention mask (padding="max_length", truncation=True, as diffusers
  calls it), the untruncated ids, their tokens and decoding, and the text
  diffusers reports as truncated.
- sd1-tiny.safetensors, sd2-tiny.safetensors: for a batch of prompts, the
  model's last_hidden_state, pooler_output and every hidden state, the
  clip_skip=1 embeddings as diffusers computes them (hidden_states[-2] then
  final_layer_norm), and the same with the padding mask passed.

Every reference is computed from the folders loaded back from disk
(`from_pretrained`), on CPU in float32.
"""

import gzip
import importlib.util
import json
import os
import shutil

import torch
from safetensors.torch import load_file, save_file

import transformers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "crates", "text", "tests", "fixtures")

# Known vector of the real vocabulary (transformers' CLIP tokenizer tests).
KNOWN = ("this is a test string of text", [49406, 589, 533, 320, 1628, 9696, 539, 4160, 49407])

PROMPTS = [
    "this is a test string of text",
    # capitals, punctuation, digits (split one by one), contractions
    "A Photo of an ASTRONAUT riding a Horse on MARS, 4K, highly-detailed!!! (masterpiece:1.2)",
    "it's we're I'LL they've she'd I'm don't",
    "pi is 3.14159265, e is 2.71828 and 1,000,000 > 999",
    # non-ASCII: composed and decomposed accents (NFC), a ligature (kept),
    # CJK, emoji, fractions
    "Café crème brûle\u0301e, naïve façade; Straße \u2014 東京の夜景 🚀✨ ½ \ufb01",
    # whitespace of every kind collapses to one space
    "  multiple   spaces\tand\nnew\r\nlines\u00a0nbsp\u3000ideographic\u2009thin\u0085nel  ",
    # special tokens inside the text
    "an <|endoftext|> inside, and <|startoftext|> too, <|ENDOFTEXT|>",
    # over 77 tokens: truncated
    ", ".join(["a red apple on a wooden table in the morning light"] * 8) + ", the end",
    "",
]

# The prompts the models run on (a batch).
MODEL_PROMPTS = [PROMPTS[0], PROMPTS[1], PROMPTS[4], PROMPTS[7], PROMPTS[8]]

TINY_MERGES = 1000


def bytes_to_unicode():
    """GPT-2's byte -> printable character table (as CLIP uses it)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def clip_merges():
    spec = importlib.util.find_spec("open_clip")
    path = os.path.join(spec.submodule_search_locations[0], "bpe_simple_vocab_16e6.txt.gz")
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    return lines[1 : 49152 - 256 - 2 + 1]


def vocab_of(merges):
    tokens = list(bytes_to_unicode().values())
    tokens = tokens + [t + "</w>" for t in tokens]
    tokens += ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}


def added_token(content):
    return {
        "content": content,
        "lstrip": False,
        "normalized": True,
        "rstrip": False,
        "single_word": False,
    }


def write_sd_tokenizer(folder, merges, pad_token, gz=False):
    """A tokenizer folder as the Stable Diffusion repositories ship it."""
    os.makedirs(folder, exist_ok=True)
    vocab = json.dumps(vocab_of(merges), ensure_ascii=False).encode("utf-8")
    merges_txt = ("#version: 0.2\n" + "\n".join(merges) + "\n").encode("utf-8")
    for name, data in [("vocab.json", vocab), ("merges.txt", merges_txt)]:
        if gz:
            # mtime=0: the same bytes on every run
            with open(os.path.join(folder, name + ".gz"), "wb") as f:
                with gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as g:
                    g.write(data)
        else:
            with open(os.path.join(folder, name), "wb") as f:
                f.write(data)
    dict_token = lambda c: {"__type": "AddedToken", **added_token(c)}
    config = {
        "add_prefix_space": False,
        "bos_token": dict_token("<|startoftext|>"),
        "do_lower_case": True,
        "eos_token": dict_token("<|endoftext|>"),
        "errors": "replace",
        "model_max_length": 77,
        "name_or_path": "openai/clip-vit-large-patch14",
        "pad_token": pad_token,
        "special_tokens_map_file": "./special_tokens_map.json",
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": dict_token("<|endoftext|>"),
    }
    special = {
        "bos_token": added_token("<|startoftext|>"),
        "eos_token": added_token("<|endoftext|>"),
        "pad_token": pad_token,
        "unk_token": added_token("<|endoftext|>"),
    }
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(folder, "special_tokens_map.json"), "w") as f:
        json.dump(special, f, indent=2)


def token_references(folder):
    tok = CLIPTokenizer.from_pretrained(folder)
    out = []
    for p in PROMPTS:
        enc = tok(p, padding="max_length", max_length=tok.model_max_length, truncation=True)
        full = tok(p).input_ids
        removed = None
        if len(full) > tok.model_max_length:
            # diffusers' StableDiffusionPipeline.encode_prompt
            removed = tok.batch_decode([full[tok.model_max_length - 1 : -1]])[0]
        out.append(
            dict(
                prompt=p,
                input_ids=enc.input_ids,
                attention_mask=enc.attention_mask,
                untruncated_ids=full,
                tokens=tok.convert_ids_to_tokens(full),
                decoded=tok.decode(full),
                decoded_skip_special=tok.decode(full, skip_special_tokens=True),
                truncated=removed,
            )
        )
    return out, tok


def perturb(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def make_model(name, tokenizer_dir, hidden_act, eos_token_id, legacy_names, seed):
    pipe = os.path.join(FIXTURES, name)
    vocab_size = len(vocab_of(clip_merges()[:TINY_MERGES]))
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        projection_dim=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act=hidden_act,
        bos_token_id=0 if eos_token_id == 2 else vocab_size - 2,
        eos_token_id=eos_token_id,
        pad_token_id=1,
    )
    model = CLIPTextModel(config).eval()
    perturb(model, seed)
    te = os.path.join(pipe, "text_encoder")
    model.save_pretrained(te)
    weights_path = os.path.join(te, "model.safetensors")
    if legacy_names:
        # As the Stable Diffusion 1.x checkpoints (transformers 4) have them.
        sd = load_file(weights_path)
        sd = {"text_model." + k: v for k, v in sd.items()}
        sd["text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)
        save_file(sd, weights_path, metadata={"format": "pt"})
    with open(os.path.join(pipe, "model_index.json"), "w") as f:
        json.dump(
            {
                "_class_name": "StableDiffusionPipeline",
                "_diffusers_version": "0.42.1",
                "text_encoder": ["transformers", "CLIPTextModel"],
                "tokenizer": ["transformers", "CLIPTokenizer"],
            },
            f,
            indent=2,
        )

    # References from the folders loaded back.
    model = CLIPTextModel.from_pretrained(te).eval()
    tok = CLIPTokenizer.from_pretrained(tokenizer_dir)
    enc = tok(
        MODEL_PROMPTS,
        padding="max_length",
        max_length=tok.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    ids, mask = enc.input_ids, enc.attention_mask
    ref = {"input_ids": ids, "attention_mask": mask}
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        assert len(out.hidden_states) == config.num_hidden_layers + 1
        assert torch.equal(out.hidden_states[0], model.embeddings(ids))
        ref["last_hidden_state"] = out.last_hidden_state
        ref["pooler_output"] = out.pooler_output
        for i, h in enumerate(out.hidden_states):
            ref[f"hidden_states.{i}"] = h
        # diffusers' clip_skip: hidden_states[-(clip_skip + 1)], then the final norm
        ref["clip_skip_1"] = model.final_layer_norm(out.hidden_states[-2])
        masked = model(ids, attention_mask=mask)
        ref["masked.last_hidden_state"] = masked.last_hidden_state
        ref["masked.pooler_output"] = masked.pooler_output
        # the eager (textbook) attention agrees with the default (sdpa)
        model.set_attn_implementation("eager")
        eager = model(ids, attention_mask=mask)
        err = (eager.last_hidden_state - masked.last_hidden_state).abs().max().item()
        assert err < 1e-5, err
    save_file(
        {k: v.contiguous() for k, v in ref.items()},
        os.path.join(FIXTURES, f"{name}.safetensors"),
        metadata={"prompts": json.dumps(MODEL_PROMPTS)},
    )


def main():
    assert transformers.__version__ == "5.24.0", transformers.__version__
    if os.path.isdir(FIXTURES):
        shutil.rmtree(FIXTURES)
    os.makedirs(FIXTURES)
    merges = clip_merges()
    tokens = {}

    # The real vocabulary, as SD 1.x ships it (vocab.json + merges.txt).
    real = os.path.join(FIXTURES, "clip-vocab")
    tmp = os.path.join(FIXTURES, "clip-vocab.tmp")
    write_sd_tokenizer(tmp, merges, "<|endoftext|>")
    tokens["clip-vocab"], tok = token_references(tmp)
    assert tok(KNOWN[0]).input_ids == KNOWN[1], tok(KNOWN[0]).input_ids
    shutil.rmtree(tmp)
    write_sd_tokenizer(real, merges, "<|endoftext|>", gz=True)

    # The same vocabulary with SD 2.x's pad token `!`.
    tmp = os.path.join(FIXTURES, "clip-vocab-pad.tmp")
    write_sd_tokenizer(tmp, merges, "!")
    tokens["clip-vocab-pad-!"], _ = token_references(tmp)
    shutil.rmtree(tmp)

    tiny = merges[:TINY_MERGES]
    vocab_size = len(vocab_of(tiny))

    sd1_tok = os.path.join(FIXTURES, "sd1-tiny", "tokenizer")
    write_sd_tokenizer(sd1_tok, tiny, "<|endoftext|>")
    tokens["sd1-tiny"], _ = token_references(sd1_tok)
    make_model("sd1-tiny", sd1_tok, "quick_gelu", 2, legacy_names=True, seed=1)

    # SD 2.x-like: the tokenizer as transformers 5 saves it (tokenizer.json).
    sd2_tok = os.path.join(FIXTURES, "sd2-tiny", "tokenizer")
    tmp = os.path.join(FIXTURES, "sd2-tok.tmp")
    write_sd_tokenizer(tmp, tiny, "!")
    CLIPTokenizer.from_pretrained(tmp).save_pretrained(sd2_tok)
    shutil.rmtree(tmp)
    assert not os.path.exists(os.path.join(sd2_tok, "vocab.json"))
    tokens["sd2-tiny"], _ = token_references(sd2_tok)
    make_model("sd2-tiny", sd2_tok, "gelu", vocab_size - 1, legacy_names=False, seed=2)

    with open(os.path.join(FIXTURES, "tokens.json"), "w") as f:
        json.dump(tokens, f, ensure_ascii=False, indent=1)
        f.write("\n")
    total = 0
    for dirpath, _, files in os.walk(FIXTURES):
        for name in files:
            total += os.path.getsize(os.path.join(dirpath, name))
    print(f"wrote {FIXTURES} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
