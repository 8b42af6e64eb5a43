"""docs/configuration.md is the generated reference of the schema as it stands, every key described."""

from __future__ import annotations

from pathlib import Path

from essa.config import valid_keys
from essa.config_reference import reference, yaml_comments

REPO = Path(__file__).resolve().parents[2]


def test_the_configuration_reference_is_up_to_date():
    document = (REPO / "docs" / "configuration.md").read_text()
    assert document == reference(), "regenerate: python -m essa.config_reference > docs/configuration.md"


def test_every_key_of_the_schema_is_described():
    text = reference()
    assert "(undocumented)" not in text, [line for line in text.splitlines() if "(undocumented)" in line]
    for key in valid_keys():
        assert f"| `{key}`" in text


def test_comments_are_read_from_the_block_above_each_key(tmp_path):
    yaml = tmp_path / "c.yaml"
    yaml.write_text("# file header\n\nrun:\n  # first line\n  # second line\n  a: 1\n  b: 2\n  # c's\n  c: [1, 2]\n")
    assert yaml_comments(yaml) == {"run.a": "first line second line", "run.b": "", "run.c": "c's"}
