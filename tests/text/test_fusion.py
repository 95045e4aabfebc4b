"""The fusion functions of product search (privrec.text.fusion) and the lexical match share."""

from __future__ import annotations

import numpy as np
import pytest

from privrec.text.fusion import BlendParams, blend, choose_blend, rrf, top_k
from privrec.text.lexical import LexicalIndex


def test_top_k_breaks_ties_by_the_smaller_row_at_the_cut() -> None:
    # six items tied at the cut of k=3: the smallest rows must be kept, whatever order
    # argpartition would leave them in
    scores = np.array([1.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 3.0])
    rows = np.array([70, 60, 50, 40, 30, 20, 10, 0])
    pos = top_k(scores, rows, 3)
    assert rows[pos].tolist() == [0, 60, 10]
    assert top_k(scores, rows, 20).tolist() == [7, 1, 6, 5, 4, 3, 2, 0]
    assert top_k(np.zeros(0), np.zeros(0, dtype=np.int64), 3).size == 0


def test_choose_blend_switches_at_the_match_share() -> None:
    kw = dict(lexical_power=1.0, lexical_weight=0.9, partial_power=4.0, partial_weight=0.7)
    assert choose_blend(0.6, match_share=0.6, **kw) == BlendParams(1.0, 0.9, True, 0.6)
    assert choose_blend(0.59, match_share=0.6, **kw) == BlendParams(4.0, 0.7, False, 0.59)
    assert choose_blend(0.0, match_share=0.0, **kw).matched
    with pytest.raises(ValueError, match="share"):
        choose_blend(1.5, match_share=0.6, **kw)


def test_blend_formula() -> None:
    lex = np.array([4.0, 2.0, 0.0])
    dense = np.array([0.1, 0.2, 0.9])
    got = blend(lex, dense, 4.0, BlendParams(2.0, 0.8, True, 1.0))
    np.testing.assert_allclose(got, 0.8 * np.array([1.0, 0.25, 0.0]) + 0.2 * dense)
    # no query weight: the cosine alone (scaled)
    np.testing.assert_allclose(
        blend(lex, dense, 0.0, BlendParams(1.0, 0.5, True, 0.0)), 0.5 * dense
    )
    # a high power lets the semantic match (row 2) beat the item covering half the query
    assert np.argmax(blend(lex, dense, 4.0, BlendParams(4.0, 0.9, False, 0.5))[1:]) == 1
    assert np.argmax(blend(lex, dense, 4.0, BlendParams(1.0, 0.9, True, 0.5))[1:]) == 0


def test_rrf_weights_the_two_rankings() -> None:
    rows = np.array([1, 2, 3])
    got = rrf(rows, np.array([1, 2]), np.array([3, 1]), 0.75, 60)
    want = [1.5 / 61 + 0.5 / 62, 1.5 / 62, 0.5 / 61]
    np.testing.assert_allclose(got, want)


def test_match_share_counts_known_tokens_by_idf() -> None:
    lex = LexicalIndex()
    texts = ["red lipstick", "red nail polish", "blue nail polish", "chef knife", "red candle"]
    lex.set_texts(np.arange(len(texts)), texts)
    rows = np.arange(len(texts))
    assert lex.match_share(["red", "lipstick"], rows) == 1.0
    # "zzqx" is no catalogue word: it does not count, so item 0 still holds the whole query
    assert lex.match_share(["red", "lipstick", "zzqx"], rows) == 1.0
    # only item 0 has "lipstick"; the best of the others holds "red" alone: idf(red) / total
    share = lex.match_share(["red", "lipstick"], np.array([1, 2, 3]))
    want = lex.idf("red") / (lex.idf("red") + lex.idf("lipstick"))
    assert share == pytest.approx(want)
    assert 0 < share < 0.5  # "red" is in three items, "lipstick" in one: the rarer word weighs more
    assert lex.match_share(["zzqx"], rows) == 0.0
    assert lex.match_share(["red"], np.zeros(0, dtype=np.int64)) == 0.0
