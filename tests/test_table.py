from deep_compression.table import format_table


def test_alignment_and_markdown_shape() -> None:
    out = format_table(["layer", "kept %"], [["fc1", "8.00%"], ["conv2", "12.50%"]])
    lines = out.splitlines()
    assert lines[1] == "|:------|-------:|"
    assert lines[2] == "| fc1   |  8.00% |" and lines[3] == "| conv2 | 12.50% |"


def test_integers_get_separators() -> None:
    assert "| 235,200 |" in format_table(["n"], [[235200]])
