"""Text from the user's data is printed literally: labels and ids that look like Rich markup
(`[/x]`, `[red]`) neither crash `ladder check` (MarkupError) nor change its styling."""

from __future__ import annotations

from pathlib import Path

from helpers import ladder

from llm_ladder.testing import write_task


def test_check_prints_markup_like_labels_literally(tmp_path: Path) -> None:
    labels = ["[/x]", "[red]a[/red]", "[bold]b"]
    rows = [{"id": f"r{i}[/]", "input": f"question {i} [link=x]", "output": labels[i % 3]}
            for i in range(30)]
    task = write_task(tmp_path / "t", rows)
    proc = ladder("check", task, check=False)
    assert "MarkupError" not in proc.stderr and "Traceback" not in proc.stderr
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "labels (3): " in proc.stdout
    for label in labels:
        assert label in proc.stdout
