"""The demo's size accuracy parses answers; checked on hand-written answers."""

from alignlab.eval.size_accuracy import extract_size, size_accuracy


def test_extract_size_from_hand_written_answers():
    assert extract_size("建议选 110 码。身高 105 cm，衣服要多留 3 cm。") == "110"
    assert extract_size("I recommend size 90. At 84 cm the garment should leave room.") == "90"
    assert extract_size("买大一码总是对的，孩子长得快。") is None  # no size
    assert extract_size("选 100 码或者 110 码都可以。") is None  # two sizes: not a recommendation
    assert extract_size("Size 120 is fine; size 120 fits.") == "120"  # the same size twice is one size
    assert extract_size("身高 110 厘米的孩子") is None  # a height is not a size


def test_size_accuracy_counts_every_sample():
    answers = [["建议选 110 码。", "建议选 120 码。"], ["买大一码总是对的", "size 90"]]
    assert size_accuracy(answers, ["110", "90"]) == 2 / 4
