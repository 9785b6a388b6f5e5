"""The self-contained HTML page: one file, every script and style inlined, no network.

Every string from prompts, task files and tokenizers reaches the page either through
jinja2's autoescape (HTML text) or through `script_json` (JSON inside <script>, with
`<`, `>` and `&` escaped so no string can close the element).
"""

from __future__ import annotations

import json
import multiprocessing
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import TypeVar

import jinja2
import pandas as pd
import plotly.offline

from headscope.files import check_folder_replaceable, write_folder_atomic, write_text
from headscope.models.devices import idle_cores
from headscope.report.figures import Figure
from headscope.report.page import build_page
from headscope.report.page_parts import AtlasSection, Page, TableView
from headscope.report.plotly_json import plotly_white, typed_array
from headscope.report.workers import forked_map
from headscope.run import RESULTS_FILE, Run

PAGE_FILE = "index.html"
T = TypeVar("T")
R = TypeVar("R")


def script_json(data, default: Callable | None = None) -> str:
    """JSON safe to place inside a <script> element (`default`: json.dumps's, for other types)."""
    text = json.dumps(data, sort_keys=True, ensure_ascii=False, allow_nan=False, default=default)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def figure_specs(figures: list[Figure]) -> dict[str, str]:
    """Each figure's plotly JSON, safe inside a <script> tag, by figure name, in this process
    (plain dicts: a few milliseconds a figure, less than forking workers would cost). The
    template (plotly_white) is read once for them all."""
    template = plotly_white()
    return {figure.name: _spec(figure, template) for figure in figures}


def _spec(figure: Figure, template: dict) -> str:
    return spec_json(figure.spec(template))


def spec_json(spec: dict) -> str:
    """A figure's plotly JSON (its `spec`) as the page holds it: numpy arrays as plotly writes them."""
    return script_json(spec, default=typed_array)


def _asset(name: str) -> str:
    return resources.files("headscope.report").joinpath("assets", name).read_text(encoding="utf-8")


def _environment() -> jinja2.Environment:
    return jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def render_page(page: Page, pngs: bool = True) -> str:
    """The whole page as one HTML string (`pngs`: each figure links its PNG)."""
    specs = figure_specs(page.figures)
    viewers = {task.name: script_json(task.viewer) for task in page.tasks if task.viewer}
    circuits = {task.name: script_json(task.circuit.diagram) for task in page.tasks if task.circuit}
    template = _environment().from_string(_asset("report.html.j2"))
    return template.render(
        page=page,
        pngs=pngs,
        specs=specs,
        viewers=viewers,
        circuits=circuits,
        css=_asset("report.css"),
        plotly_js=plotly.offline.get_plotlyjs(),
        figures_js=_asset("figures.js"),
        viewer_js=_asset("viewer.js"),
        circuit_js=_asset("circuit.js"),
    )


def render_atlas_page(title: str, part: AtlasSection, facts: TableView) -> str:
    """The page of `headscope atlas`: the atlas section alone, with the model and options."""
    specs = figure_specs(part.heatmaps)
    template = _environment().from_string(_asset("atlas.html.j2"))
    return template.render(
        title=title,
        part=part,
        facts=facts,
        specs=specs,
        css=_asset("report.css"),
        plotly_js=plotly.offline.get_plotlyjs(),
        figures_js=_asset("figures.js"),
    )


def write_atlas_page(path: Path, title: str, part: AtlasSection, facts: dict) -> Path:
    view = TableView.of(
        "Model and options", pd.DataFrame({"what": list(facts), "value": list(facts.values())})
    )
    return write_text(Path(path), render_atlas_page(title, part, view))


def check_report_folder(folder: Path) -> Path:
    """`folder` when a report can replace it (new, empty or an earlier report); check it early."""
    return check_folder_replaceable(Path(folder), RESULTS_FILE)


def write_report(run: Run, folder: Path, say: Callable[[str], None] = print, pngs: bool = False) -> Path:
    """Save the run (results.json, CSVs), the page and, when `pngs` is True (the CLI's --png), one
    PNG per figure linked from the page; return the page. The PNGs are most of the writing time
    (README, The report), so they are drawn only when asked for.

    The files are written into a temporary folder beside `folder`, swapped in whole when
    complete: a run stopped part-way leaves an earlier report in `folder` as it was.
    """
    write = lambda tmp: _write_files(run, tmp, say, pngs)  # noqa: E731
    folder = write_folder_atomic(Path(folder), write, RESULTS_FILE)
    return folder / PAGE_FILE


def _write_files(run: Run, folder: Path, say: Callable[[str], None], pngs: bool) -> None:
    """results.json and the CSVs, and the page: side by side in two forked processes where two
    cores are idle (`workers.forked_map`: the same files as one after the other); with PNGs, one
    step after another (their drawing forks workers of its own)."""
    say(f"writing results.json and {len(run.tables)} CSV tables")
    if pngs:
        run.save(folder)
        page = _checked_page(run)
        say(f"drawing {len(page.figures)} figures (PNG)")
        draw_pngs(page.figures, folder)
        say("writing the page")
        write_text(folder / PAGE_FILE, render_page(page, pngs))
        return
    say("writing the page")

    def job(what: str) -> str | None:
        if what == "tables":
            run.save(folder)
            return None
        return render_page(_checked_page(run), pngs)

    workers = min(idle_cores(), 2) if "fork" in multiprocessing.get_all_start_methods() else 1
    write_text(folder / PAGE_FILE, forked_map(job, ["tables", "page"], [1.0, 2.0], workers)[1])


def _checked_page(run: Run) -> Page:
    page = build_page(run)
    _check_unique(page)
    return page


def _draw(job: tuple[Figure, Path]) -> Path:
    figure, path = job
    return figure.png(path)


def draw_pngs(figures: list[Figure], folder: Path, workers: int | None = None) -> list[Path]:
    """One PNG per figure, drawn by forked worker processes when there is more than one CPU."""
    return in_workers(_draw, [(figure, folder / f"{figure.name}.png") for figure in figures], workers)


def in_workers(job: Callable[[T], R], items: list[T], workers: int | None = None) -> list[R]:
    """`[job(item) for item in items]`, in forked worker processes (at most 4, one per core idle
    now: on a busy machine a worker only waits for a core) when there are at least 8 items and
    more than one worker, in order."""
    workers = workers if workers is not None else min(idle_cores(), 4)
    if workers < 2 or len(items) < 8 or "fork" not in multiprocessing.get_all_start_methods():
        return [job(item) for item in items]
    context = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_ignore_interrupts)
    try:
        with _interrupts_deferred():
            done = pool.map(job, items, chunksize=4)  # forks every worker now
        return list(done)
    finally:  # on Ctrl-C: the items not begun are dropped, the few under way finish
        pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """A Ctrl-C while the workers fork is noted and raised once they are started: raised inside
    an at-fork callback (logging's lock release) it was printed as 'Exception ignored' and
    swallowed, and the report ran on to the end; raised inside the pool's start-up it left a
    pool that never shut down. (Blocking the signal is no answer: any thread may take it.)"""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread receives Python's signals
        return
    noted: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: noted.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if noted:
        raise KeyboardInterrupt


def _ignore_interrupts() -> None:
    """Workers leave Ctrl-C to the main process (a terminal sends SIGINT to the whole process
    group): an interrupt landing in a worker's weakref callback printed a stray 'Exception
    ignored' line after the one-line 'interrupted' message."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _check_unique(page: Page) -> None:
    names = [f.name for f in page.figures]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"two figures share the name {repeated[0]!r}; task names must differ after slugging")
