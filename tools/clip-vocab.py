#!/usr/bin/env python3
# Derive Hugging Face's CLIP tokenizer files from OpenAI's bpe_simple_vocab_16e6.txt.gz (python3
# standard library only). Writes OUTDIR/vocab.json and OUTDIR/merges.txt, and with --tokenizer-json
# also OUTDIR/tokenizer.json laid out as openai/clip-vit-base-patch32's on the Hub.
#
# How, exactly (the recipe of openai/CLIP simple_tokenizer.py, which HF's files reproduce):
#   lines  = gunzip(source).decode("utf-8").split("\n")
#   merges = lines[1 : 49152 - 256 - 2 + 1]          (48,894 merges; line 0 is the file's header)
#   vocab  = the 256 byte symbols in bytes_to_unicode() order, the same 256 with "</w>" appended,
#            then "".join(merge) for every merge in order, then <|startoftext|>, <|endoftext|>
#            (ids 0..49407; the two specials are 49406 and 49407)
#   merges.txt = "#version: 0.2" then the 48,894 merge lines, each "a b"
# tokenizer.json follows transformers' CLIPConverter (convert_slow_tokenizer.py):
#   normalizer    Sequence[NFC, Replace(Regex \s+ -> " "), Lowercase]
#   pre_tokenizer Sequence[Split(Regex <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|
#                 [\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+, Removed, invert=true),
#                 ByteLevel(add_prefix_space=false, use_regex=true)]
#   model         BPE(continuing_subword_prefix "", end_of_word_suffix "</w>",
#                 unk_token <|endoftext|>, fuse_unk false, dropout null)
#   post_processor RobertaProcessing(cls <|startoftext|> 49406, sep <|endoftext|> 49407,
#                 trim_offsets false, add_prefix_space false); decoder ByteLevel
#   added_tokens  <|startoftext|> (normalized true), <|endoftext|> (normalized false), both special
import argparse
import gzip
import json
import os
import sys

N_MERGES = 49152 - 256 - 2  # 48,894

CLIP_SPLIT = (r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|"
              r"[^\s\p{L}\p{N}]+")


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable character table, in its own order."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def default_source():
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "..", "..", "shared", "tokenizers", "clip",
                        "bpe_simple_vocab_16e6.txt.gz")


def derive(source):
    with gzip.open(source) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:N_MERGES + 1]]
    if len(merges) != N_MERGES:
        sys.exit(f"{source}: expected at least {N_MERGES + 1} lines, found {len(lines)}")
    for i, m in enumerate(merges, start=2):
        if len(m) != 2:
            sys.exit(f"{source}:{i}: expected two symbols, found {len(m)}")
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab)}, merges


def tokenizer_json(vocab, merges):
    def added(i, content, normalized):
        return {"id": i, "content": content, "single_word": False, "lstrip": False,
                "rstrip": False, "normalized": normalized, "special": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [added(49406, "<|startoftext|>", True),
                         added(49407, "<|endoftext|>", False)],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "},
            {"type": "Lowercase"}]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": CLIP_SPLIT}, "behavior": "Removed",
             "invert": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": True}]},
        "post_processor": {"type": "RobertaProcessing", "sep": ["<|endoftext|>", 49407],
                           "cls": ["<|startoftext|>", 49406], "trim_offsets": False,
                           "add_prefix_space": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<|endoftext|>",
                  "continuing_subword_prefix": "", "end_of_word_suffix": "</w>",
                  "fuse_unk": False, "byte_fallback": False, "vocab": vocab,
                  "merges": [" ".join(m) for m in merges]},
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__ or "derive HF CLIP vocab.json/merges.txt")
    ap.add_argument("outdir")
    ap.add_argument("--source", default=default_source(),
                    help="bpe_simple_vocab_16e6.txt.gz (default: ../shared/tokenizers/clip/)")
    ap.add_argument("--tokenizer-json", action="store_true",
                    help="also write tokenizer.json (HF tokenizers format)")
    args = ap.parse_args()
    vocab, merges = derive(args.source)
    os.makedirs(args.outdir, exist_ok=True)
    with open(os.path.join(args.outdir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(args.outdir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")
    if args.tokenizer_json:
        with open(os.path.join(args.outdir, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(tokenizer_json(vocab, merges), f, ensure_ascii=False)


if __name__ == "__main__":
    main()
