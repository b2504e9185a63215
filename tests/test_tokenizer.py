"""The device tokenizer gives open_clip's ids, with torch, open_clip, ftfy and regex blocked."""
import json
import random
import subprocess
import sys

import open_clip
import pytest

from stpr.export.text_export import write_tokenizer
from stpr.train.model.clip_tower import register_builtin_configs

WORDS = ["circle", "moving", "left", "right", "up", "down", "ring", "square", "triangle", "cross", "person",
         "waving", "hands", "jumping", "jacks", "playing", "daf", "TVShow", "ApplyEyeMakeup", "don't", "we'll",
         "it's", "they're", "I'm", "you've", "he'd", "rock'n'roll", "x-ray", "e-mail", "a.k.a.", "3D", "2024",
         "½", "Ⅷ", "²", "café", "naïve", "Straße", "résumé", "Ωmega", "日本語", "テキスト", "한국어", "中文字",
         "Привет",
         "مرحبا", "שלום", "हिन्दी", "ไทย", "🙂", "👍🏽", "🏃‍♀️", "ﬁsh", "ﬂow", "Ĳssel", "ＦＵＬＬ", "ｗｉｄｔｈ", "ｶﾀｶﾅ",
         "“quoted”", "‘single’", "&amp;", "&lt;b&gt;", "&#39;", "&eacute;", "<b>", "tab\there", "new\nline",
         "cr\r\nlf", "\u00a0nbsp", "zero\u200bwidth", "ctrl\x07bell", "\x1b[31mred\x1b[0m", "e\u0301", "Å",
         "ſtop", "'ſ", "K", "İstanbul", "ÉCOLE", "snake_case_name", "CamelCaseName", "...", "!!!", "?!", "--",
         "(paren)", "[bracket]", "{brace}", "@home", "#tag", "$5", "100%", "a/b", "c\\d", "~tilde", "`tick`",
         "<start_of_text>", "<end_of_text>", "<|endoftext|>", "'", "''s", "'S", "'LL", "o'clock"]
FIXED = ["", " ", "   \t\n ", "a", "A", "circle moving left", "a video of a person circle moving left.",
         " ".join(["word"] * 40), "supercalifragilisticexpialidocious" * 5, "x" * 300, "!" * 200,
         "日本語" * 30, "🙂" * 50]


def corpus(n: int = 1200) -> list[str]:
    rng = random.Random(0)  # deterministic
    out = list(FIXED) + list(WORDS)
    seps = [" ", "  ", "_", "-", "", ", ", "! ", " & ", "\t", "'"]
    while len(out) < n:
        k = rng.choice([1, 2, 3, 4, 6, 12, 30])  # 30 words: past the 32-token context (truncation)
        parts = [rng.choice(WORDS) for _ in range(k)]
        text = parts[0] + "".join(rng.choice(seps) + p for p in parts[1:])
        if rng.random() < 0.2:
            text = text.upper()
        out.append(text)
    return out


BLOCKED_RUN = """
import json, sys
for mod in ("torch", "open_clip", "ftfy", "regex"):
    sys.modules[mod] = None  # any import of them now fails
from stpr.runtime.text.tokenizer import ClipTokenizer
tok = ClipTokenizer.from_file(sys.argv[1], int(sys.argv[2]))
texts = json.load(open(sys.argv[3], encoding="utf-8"))
json.dump(tok(texts).tolist(), open(sys.argv[4], "w"))
"""


@pytest.fixture(scope="module")
def reference():
    register_builtin_configs()
    return open_clip.get_tokenizer("stpr-tiny")


def test_tokenizer_gives_open_clip_ids_without_torch(reference, tmp_path):
    texts = corpus()
    assert len(texts) >= 1000
    want = reference(texts).numpy()
    L = want.shape[1]
    vocab = write_tokenizer(tmp_path / "tokenizer.json")
    (tmp_path / "texts.json").write_text(json.dumps(texts), encoding="utf-8")
    res = subprocess.run([sys.executable, "-c", BLOCKED_RUN, str(vocab), str(L), str(tmp_path / "texts.json"),
                          str(tmp_path / "ids.json")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads((tmp_path / "ids.json").read_text())
    bad = [(t, g, w) for t, g, w in zip(texts, got, want.tolist()) if g != w]
    assert not bad, f"{len(bad)} strings differ, first: {bad[0]}"
    # The corpus does exercise what it claims: empty texts, truncation that keeps the end token.
    eot = reference.eot_token_id
    assert want[0, :3].tolist() == [reference.sot_token_id, eot, 0]
    truncated = want[:, -1] == eot
    assert truncated.sum() > 50


def test_tokenizer_refuses_a_vocab_that_does_not_follow_its_merges(tmp_path):
    from stpr.runtime.text.tokenizer import ClipTokenizer

    path = write_tokenizer(tmp_path / "tokenizer.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    data["vocab"][1000], data["vocab"][1001] = data["vocab"][1001], data["vocab"][1000]
    with pytest.raises(ValueError, match="does not follow from its merges"):
        ClipTokenizer(data["merges"], data["vocab"], 32)
