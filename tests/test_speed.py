"""qwen_docs_helpers.speed: results files in, tables and plots out, as the speed page shows them.

The fixture ``tests/data/benchmark-tiny-cpu.json`` was written by ``benchmarks/generation.py --device cpu --tiny``
(tests/test_benchmark_smoke.py checks that the live script still writes this format). GPU-only fields (peak
memory, datasheet bandwidth) and a failed row are filled in here to cover what a GPU run produces.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from qwen_docs_helpers.errors import ResultsNotFoundError
from qwen_docs_helpers.speed import (
    ANCHORS,
    BenchmarkResults,
    figure_svg,
    load_results,
    markdown_table,
    options_table,
    plot_results,
    plot_roofline,
    results_dir,
    results_table,
    spec_bandwidth,
)

FIXTURE = Path(__file__).parent / "data" / "benchmark-tiny-cpu.json"
GIB = 2**30


def as_gpu_run(data: dict[str, Any]) -> dict[str, Any]:
    """The tiny CPU results dressed as a GPU run: peak memory per row, a datasheet, one failed row."""
    data["provenance"].update(tiny=False, device="cuda", device_name="NVIDIA H100 80GB HBM3", driver="580.65")
    data["bandwidth"].update(spec_bytes_per_s=3.35e12, spec="NVIDIA H100 SXM: 3.35 TB/s HBM3")
    for index, row in enumerate(data["rows"]):
        row["peak_memory_bytes"] = (10 + index) * GIB
    data["rows"][3].update(status="failed", error="OutOfMemoryError: CUDA out of memory")
    return data


@pytest.fixture
def gpu_results(tmp_path: Path) -> BenchmarkResults:
    (tmp_path / "nvidia-h100-80gb-hbm3.json").write_text(json.dumps(as_gpu_run(json.loads(FIXTURE.read_text()))))
    (result,) = load_results(tmp_path)
    return result


def test_load_results_skips_tiny_runs_and_checks_the_schema(tmp_path: Path) -> None:
    assert load_results(tmp_path) == []
    with pytest.raises(ResultsNotFoundError, match=r"^no such folder: .*missing: pass the folder"):
        load_results(tmp_path / "missing")  # a mistyped path is not "no results yet"
    (tmp_path / "tiny.json").write_text(FIXTURE.read_text())
    assert load_results(tmp_path) == []
    (tiny,) = load_results(tmp_path, include_tiny=True)
    assert tiny.tiny and tiny.device and len(tiny.rows) == 21
    older = as_gpu_run(json.loads(FIXTURE.read_text()))
    older["provenance"]["date"] = "2020-01-01T00:00:00+00:00"
    (tmp_path / "older.json").write_text(json.dumps(older))
    newer = as_gpu_run(json.loads(FIXTURE.read_text()))
    (tmp_path / "newer.json").write_text(json.dumps(newer))
    assert [r.path.name for r in load_results(tmp_path)] == ["newer.json", "older.json"]  # newest first
    (tmp_path / "bad.json").write_text(json.dumps({**newer, "schema": 99}))
    with pytest.raises(ValueError, match="schema"):
        load_results(tmp_path)


def test_describe_says_where_and_when(gpu_results: BenchmarkResults) -> None:
    text = gpu_results.describe()
    commit = gpu_results.provenance["commit"]
    assert text.startswith("Measured on NVIDIA H100 80GB HBM3, driver 580.65 on ")
    assert " UTC, with torch " in text and "transformers 5." in text
    assert (commit[:10] if commit else "unknown") in text


def test_describe_names_mig_and_settings(tmp_path: Path) -> None:
    data = as_gpu_run(json.loads(FIXTURE.read_text()))
    data["provenance"]["mig_mode"] = "Enabled"
    (tmp_path / "gpu.json").write_text(json.dumps(data))
    (result,) = load_results(tmp_path)
    text = result.describe()
    assert text.startswith("Measured on NVIDIA H100 80GB HBM3 (a MIG instance), driver 580.65 on ")
    assert text.endswith(" Each row: 8-token prompts, 4 new tokens, the median of 1 timed run(s) after 1 warm-up "
                         "run(s).")


def test_describe_bandwidth(gpu_results: BenchmarkResults, tmp_path: Path) -> None:
    """The page names both measurements (read-only and copy) and says the roofline uses the larger."""
    b = gpu_results.bandwidth
    assert b["measured_bytes_per_s"] == max(b["read_bytes_per_s"], b["copy_bytes_per_s"])
    assert gpu_results.describe_bandwidth() == (
        f"Memory bandwidth measured: {b['read_bytes_per_s'] / 1e12:.2f} TB/s reading a large tensor once, "
        f"{b['copy_bytes_per_s'] / 1e12:.2f} TB/s copying one (bytes read + written); the roofline uses the larger; "
        "datasheet: NVIDIA H100 SXM: 3.35 TB/s HBM3.")
    # A file written before the read-only pass was measured: its one figure is a copy's.
    old = as_gpu_run(json.loads(FIXTURE.read_text()))
    del old["bandwidth"]["read_bytes_per_s"], old["bandwidth"]["copy_bytes_per_s"]
    for row in old["rows"]:
        del row["bandwidth_bytes_per_s"]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "old.json").write_text(json.dumps(old))
    (result,) = load_results(tmp_path / "old")
    assert result.describe_bandwidth().startswith("Copy bandwidth measured (bytes read + written): ")


def test_results_table(gpu_results: BenchmarkResults) -> None:
    table = results_table(gpu_results)
    sections = table.split("\n\n**")
    assert len(sections) == 3 and sections[0].startswith("**Qwen2-7B-Instruct**")
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| variant")]
    assert len(rows) == 20  # 21 rows, one failed
    assert "| fast | 1 |" not in sections[0]
    assert "Not measured: fast at batch 1 (OutOfMemoryError: CUDA out of memory)." in sections[0]
    first = next(r for r in gpu_results.rows if r["status"] == "ok")
    line = rows[0].split(" | ")
    assert line[0] == f"| {first['variant']}" and line[1] == str(first["batch"])
    assert line[5] == f"{first['peak_memory_bytes'] / GIB:,.2f}"
    assert line[7] == f"{first['roofline_share']:.0%} |"
    only = results_table(gpu_results, models=["Qwen/Qwen2-1.5B-Instruct"])
    assert only.startswith("**Qwen2-1.5B-Instruct**") and "Qwen2-7B" not in only


def test_options_table_compares_with_sdpa(gpu_results: BenchmarkResults) -> None:
    table = options_table(gpu_results)
    lines = table.splitlines()[2:]
    rows = {(r["model"], r["variant"]): r for r in gpu_results.rows if r["batch"] == 1 and r["status"] == "ok"}
    assert len(lines) == len(rows) - 3  # every batch-1 option but the sdpa baselines
    base, nf4 = rows[("Qwen/Qwen2-7B-Instruct", "sdpa")], rows[("Qwen/Qwen2-7B-Instruct", "nf4")]
    expected = (f"| Qwen2-7B-Instruct | nf4 | {nf4['decode_tokens_per_s'] / base['decode_tokens_per_s']:.2f}x "
                f"| {(nf4['peak_memory_bytes'] - base['peak_memory_bytes']) / GIB:+.2f} GiB |")
    assert expected in lines


def test_markdown_table() -> None:
    table = markdown_table(["model", "format", "GiB"], [["Qwen2-7B", "nf4", 5.5], ["a|b", "bf16", "1,024"]], left=2)
    assert table.splitlines() == [
        "| model | format | GiB |",
        "|---|---|--:|",  # the first `left` columns aligned left, the numbers right
        "| Qwen2-7B | nf4 | 5.5 |",
        "| a\\|b | bf16 | 1,024 |",  # a pipe in a cell does not start a new column
    ]
    assert markdown_table(["a", "b"], []).splitlines() == ["| a | b |", "|---|--:|"]
    titled = markdown_table(["a"], [[1]], title="**Qwen2-7B**: 56 KiB")
    assert titled == "**Qwen2-7B**: 56 KiB\n\n| a |\n|---|\n| 1 |"
    # A notebook renders it as Markdown; a plain script prints the text itself, not an object's repr.
    assert titled._repr_markdown_() == titled and f"{titled}" == str(titled) == titled


def _tick_labels(labels: list[Any]) -> list[str]:
    return [label.get_text() for label in labels if label.get_text()]


def test_plots_render_deterministic_svg(gpu_results: BenchmarkResults) -> None:
    figure = plot_results(gpu_results)
    assert len(figure.axes) == 6  # speed and memory for each of three models
    svg = figure_svg(figure)
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert figure_svg(plot_results(gpu_results)) == svg  # no dates or random ids: unchanged results, same page
    # Transparent: the page's stylesheet gives the plot its background, light or dark (img.qd-plot).
    background = svg.split('<g id="patch_1">')[1].split("</g>")[0]
    assert 'style="fill: none"' in background


def test_results_plot_is_labelled_and_legible(gpu_results: BenchmarkResults) -> None:
    """One row per model, titled with its name; a legend says which mark is the roofline; plain tick numbers."""
    figure = plot_results(gpu_results)
    assert figure.get_figwidth() <= 6  # shown at about its own size: text stays legible scaled to a phone
    speed_axes, memory_axes = figure.axes[0::2], figure.axes[1::2]
    assert [axis.get_title(loc="left") for axis in speed_axes] == [
        "Qwen2-7B-Instruct", "Qwen2-1.5B-Instruct", "Qwen1.5-MoE-A2.7B-Chat"]
    (legend,) = figure.legends
    assert [text.get_text() for text in legend.get_texts()] == [
        "measured decoding speed", "its roofline", "peak memory"]
    figure_svg(figure)  # draws it, so that the tick labels are set
    speed = _tick_labels(speed_axes[0].get_xticklabels())
    assert any("," in label for label in speed)  # the tiny fixture's rooflines are 100,000s of tokens/s
    assert all(label.replace(",", "").isdigit() for label in speed)
    assert all(label.replace(".", "").isdigit() for label in _tick_labels(memory_axes[0].get_xticklabels()))
    assert not _tick_labels(memory_axes[0].get_yticklabels())  # the variants are named once, on the left
    plotted = [r for r in gpu_results.rows if r["model"] == "Qwen/Qwen2-7B-Instruct" and r["batch"] == 1
               and r["status"] == "ok"]
    assert [line.get_xdata()[0] for line in speed_axes[0].lines] == [r["roofline_tokens_per_s"] for r in plotted]


def test_roofline_plot_reads_its_values() -> None:
    from qwen_docs_helpers.published import published_config

    configs = {m: published_config(m) for m in ("Qwen/Qwen2-7B-Instruct", "Qwen/Qwen1.5-MoE-A2.7B-Chat")}
    roof = plot_roofline(configs, 3.35e12, batches=(1, 4, 16), label="H100")
    (axis,) = roof.axes
    assert len(axis.lines) == 2 and "H100" in axis.get_title()
    assert [text.get_text() for text in axis.get_legend().get_texts()] == ["Qwen2-7B-Instruct",
                                                                        "Qwen1.5-MoE-A2.7B-Chat"]
    # The batch-1 values are written beside the lines, as the text quotes them.
    assert [text.get_text() for text in axis.texts] == ["236", "676"]
    figure_svg(roof)
    ticks = _tick_labels(axis.get_yticklabels())  # 1-2-5 steps, plain numbers with thousands separators
    assert {"200", "500", "1,000", "2,000"} <= set(ticks) and all(t.replace(",", "").isdigit() for t in ticks)


def test_spec_bandwidth_by_gpu_name() -> None:
    assert spec_bandwidth("NVIDIA H100 80GB HBM3") == (3.35e12, "NVIDIA H100 SXM: 3.35 TB/s HBM3")
    assert spec_bandwidth("NVIDIA H100 PCIe")[0] == 2.0e12  # type: ignore[index]
    assert spec_bandwidth("NVIDIA H100 NVL")[0] == 3.9e12  # type: ignore[index]
    assert spec_bandwidth("NVIDIA H200")[0] == 4.8e12  # type: ignore[index]
    assert spec_bandwidth("NVIDIA A100-SXM4-80GB")[0] == 2.039e12  # type: ignore[index]
    assert spec_bandwidth("NVIDIA A100-PCIE-40GB")[0] == 1.555e12  # type: ignore[index]
    assert spec_bandwidth("NVIDIA GeForce RTX 4090") is None


def test_anchors_are_labelled_with_hardware_and_source() -> None:
    for anchor in ANCHORS:
        assert anchor.hardware.startswith("NVIDIA ") and anchor.url.startswith("https://") and anchor.source
    assert {a.tokens_per_s for a in ANCHORS if "Qwen2.5" in a.what} == {40.38, 84.28}


def test_results_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("QWEN_DOCS_BENCHMARK_RESULTS", raising=False)
    assert results_dir() == Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    load_results(results_dir())  # no error in any checkout (benchmarks/results/.gitkeep): the speed page reads it
    monkeypatch.setenv("QWEN_DOCS_BENCHMARK_RESULTS", str(tmp_path))
    assert results_dir() == tmp_path


def test_results_dir_of_an_installed_package_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from qwen_docs_helpers import speed

    monkeypatch.delenv("QWEN_DOCS_BENCHMARK_RESULTS", raising=False)
    monkeypatch.setattr(speed, "__file__", str(tmp_path / "site-packages" / "qwen_docs_helpers" / "speed.py"))
    with pytest.raises(ResultsNotFoundError) as caught:
        results_dir()
    assert "not run from a qwen-docs checkout" in caught.value.problem and "\n" not in str(caught.value)
    assert "QWEN_DOCS_BENCHMARK_RESULTS" in caught.value.fix
    monkeypatch.setenv("QWEN_DOCS_BENCHMARK_RESULTS", str(tmp_path))
    assert results_dir() == tmp_path


def test_first_matplotlib_use_is_silent(tmp_path: Path) -> None:
    """A fresh matplotlib builds its font cache, and when that is slow it logs so to stderr: a failed -W build."""
    code = ("from qwen_docs_helpers.speed import figure_svg, load_results, plot_results\n"
            f"(result,) = load_results({str(FIXTURE.parent)!r}, include_tiny=True)\n"
            "figure_svg(plot_results(result))\n")
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert any((tmp_path / "mpl").glob("fontlist*.json"))  # the cache was built, quietly
