"""Text sources: every format, the built-in split, and the errors users meet."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from quantship.data.sources import TextSource, builtin_documents, load_documents
from quantship.errors import InputError


def test_builtin_splits_are_disjoint_deterministic_and_cover_the_corpus():
    from pydoc_data.topics import topics

    calibration = builtin_documents("calibration")
    evaluation = builtin_documents("evaluation")
    assert not set(calibration) & set(evaluation)
    assert len(calibration) + len(evaluation) <= len({t.strip() for t in topics.values()})
    assert 0.1 < sum(map(len, evaluation)) / sum(map(len, calibration + evaluation)) < 0.4
    assert builtin_documents("evaluation") == evaluation
    # no shared paragraph either: a sentence seen in calibration is never scored
    paragraphs = lambda docs: {p.strip() for d in docs for p in d.split("\n\n") if len(p.strip()) > 200}  # noqa: E731
    assert not paragraphs(calibration) & paragraphs(evaluation)


def test_text_jsonl_parquet_sources(tmp_path):
    text = tmp_path / "a.txt"
    text.write_text("first document\n\nsecond document\n\n\n")
    assert load_documents(TextSource.parse(f"text:{text}")) == ["first document", "second document"]

    jsonl = tmp_path / "a.jsonl"
    rows = [{"body": "hello"}, {"body": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}]
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    docs = load_documents(TextSource.parse(f"jsonl:{jsonl}#body"))
    assert docs[0] == "hello" and docs[1][1] == {"role": "assistant", "content": "yo"}

    parquet = tmp_path / "a.parquet"
    pq.write_table(pa.table({"content": ["x y z", None, "w"]}), parquet)
    assert load_documents(TextSource.parse(f"parquet:{parquet}#content")) == ["x y z", "w"]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nonsense", "KIND:LOCATION"),
        ("builtin:train", "builtin:calibration"),
        ("jsonl:/x.jsonl", "append the field"),
        ("text:/does/not/exist.txt", "does not exist"),
        ("ftp:/x", "unknown text source kind"),
        ("hf:c4", "incomplete"),
    ],
)
def test_bad_source_specs_name_the_fix(spec, message):
    with pytest.raises(InputError, match=message):
        load_documents(TextSource.parse(spec))


def test_jsonl_errors_name_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{broken\n')
    with pytest.raises(InputError, match=r"bad.jsonl:2 is not valid JSON"):
        load_documents(TextSource.parse(f"jsonl:{bad}#text"))
    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"body": "ok"}\n')
    with pytest.raises(InputError, match=r"missing.jsonl:1 has no field 'text'"):
        load_documents(TextSource.parse(f"jsonl:{missing}#text"))


def test_hf_dataset_unreachable_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(InputError, match="could not load Hugging Face dataset"):
        load_documents(TextSource.parse("hf:allenai/c4@en:validation#text"))


def test_source_spec_round_trips():
    for spec in ("builtin:evaluation", "jsonl:/d/a.jsonl#text", "hf:allenai/c4@en:validation#text", "text:/a.txt"):
        assert str(TextSource.parse(spec)) == spec
