"""Check in a real browser that JupyterLab shows the lessons' stored audio players and widgets.

A maintainer's tool, not part of ``make test``. JupyterLab strips the ``data:audio/wav`` sources of
a notebook it does not trust (the players show 0:00 and do not play) and shows a stored widget as a
line of text ("interactive(children=...)"); ``make lab`` runs ``make trust`` first so a fresh clone's
stored outputs work. This script opens each lesson in headless Chromium against a running JupyterLab
and reports, per lesson:

- the stored players (``data:audio/wav`` sources in the notebook file, read through the server) and
  the ``<audio>`` elements in the page: how many have a ``data:audio/wav`` source, and how many are
  playable (metadata loads, ``duration > 0``, no error, and ``currentTime`` advances after a muted
  ``play()``);
- the stored widgets (``application/vnd.jupyter.widget-view+json`` outputs) and how many render as
  widgets (ipywidgets DOM: ``.jupyter-widgets``/``.widget-*``) rather than their text fallback.

With ``--run-all`` it also times JupyterLab's Run > "Restart Kernel and Run All Cells..." per
lesson, from the dialog's confirmation until the kernel is idle and every code cell has an
execution count: the way a learner runs a lesson, with the server beside the kernel. This edits the
open notebooks (JupyterLab's autosave will write them); run it on a scratch clone.

Exit status: 0 when every stored player is playable and every stored widget renders, 1 otherwise
(an untrusted notebook fails: the negative control; so does a lesson whose page could not be
checked), 2 when no notebook matched.

What it needs: Chromium (``apt-get install chromium``) and Playwright for Python in a virtual
environment of its own, not the course's (``python3 -m venv /tmp/pwvenv && /tmp/pwvenv/bin/pip
install playwright``; ``playwright install`` is not needed, the system Chromium is used).

How to run it, on a fresh clone::

    git clone <repo> /tmp/lab-clone && cd /tmp/lab-clone && make trust
    .venv/bin/jupyter lab --no-browser --port 8899 --IdentityProvider.token=check notebooks/ &
    /tmp/pwvenv/bin/python tools/check_lab_in_browser.py --screenshots /tmp/lab-shots
    git status --porcelain        # empty: opening the lessons did not modify them

Trust is recorded by content in ``$(jupyter --data-dir)/nbsignatures.db``, so on a machine that has
trusted these lessons before, a new clone is trusted already: to check as a new user would, run
``make trust`` and the server with ``JUPYTER_DATA_DIR`` set to an empty folder (and the server with
``--allow-root`` when root, as ``make lab`` does). The same without ``make trust`` is the negative
control: every player then lacks its source and the widgets show as text.

Options: ``--base-url``, ``--token``, ``--lessons 00 01`` (prefixes of the notebook names; default
all), ``--chromium`` (the browser's path), ``--screenshots DIR`` (each lesson's first widget and first
audio player as PNGs), ``--run-all`` (the timing above), ``--json FILE`` (the results).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required"]

# Each <audio> in the output areas: its source, whether its metadata loads, and whether it plays.
AUDIO_PROBE_JS = """
async (audio) => {
  const source = audio.querySelector('source');
  const src = (source && source.getAttribute('src')) || audio.getAttribute('src') || '';
  const result = {data_wav: src.startsWith('data:audio/wav'), src_prefix: src.slice(0, 30)};
  const settled = () => audio.readyState >= 1 || audio.error !== null || audio.networkState === 3;
  const deadline = Date.now() + 10000;
  while (!settled() && Date.now() < deadline) { await new Promise(r => setTimeout(r, 100)); }
  result.duration = Number.isFinite(audio.duration) ? audio.duration : null;
  result.error = audio.error ? audio.error.code : null;
  result.no_source = audio.networkState === 3;
  result.metadata = audio.readyState >= 1 && result.duration > 0 && result.error === null;
  result.advanced = false;
  if (result.metadata) {
    audio.muted = true;
    try {
      await audio.play();
      const start = audio.currentTime;
      await new Promise(r => setTimeout(r, 600));
      result.advanced = audio.currentTime > start;
      result.current_time = audio.currentTime;
    } catch (err) { result.play_error = String(err); }
    audio.pause();
    audio.currentTime = 0;
    audio.muted = false;
  }
  result.playable = result.metadata && result.advanced;
  return result;
}
"""

# Each output area that holds a stored widget: rendered as ipywidgets DOM, or as its text fallback.
WIDGETS_PROBE_JS = """
(fallbacks) => {
  const outputs = Array.from(document.querySelectorAll('.jp-NotebookPanel .jp-OutputArea-output'));
  const rendered = outputs.filter(o => o.querySelector('.jupyter-widgets, [class*="widget-"]')
                                       || o.matches('.jupyter-widgets, [class*="widget-"]'));
  const texts = outputs.filter(o => fallbacks.some(f => o.textContent.trim().startsWith(f)));
  return {rendered: rendered.length, as_text: texts.length,
          classes: rendered.slice(0, 3).map(o => {
            const w = o.querySelector('.jupyter-widgets') || o; return w.className; })};
}
"""

# Progress of "Restart Kernel and Run All": code cells' prompts and the kernel's status.
RUN_STATE_JS = """
() => {
  const prompts = Array.from(document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputArea-prompt'))
                       .map(p => p.textContent.trim());
  const status = document.querySelector('.jp-Notebook-ExecutionIndicator');
  const errors = document.querySelectorAll(
    '.jp-NotebookPanel .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]').length;
  return {prompts, errors, indicator: status ? (status.getAttribute('data-status') || status.title || '') : ''};
}
"""


def api_get(base_url: str, token: str, path: str) -> dict | list:
    """GET ``path`` from the Jupyter server's REST API."""
    url = f"{base_url}/api/{path}"
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def api_delete(base_url: str, token: str, path: str) -> None:
    """DELETE ``path`` on the Jupyter server's REST API (shutting a session down)."""
    request = urllib.request.Request(f"{base_url}/api/{path}", method="DELETE",
                                     headers={"Authorization": f"token {token}"})
    urllib.request.urlopen(request, timeout=60).close()


def list_lessons(base_url: str, token: str, prefixes: list[str] | None) -> list[str]:
    """The notebooks in the server's root folder, optionally only those whose names start with a prefix."""
    names = sorted(item["name"] for item in api_get(base_url, token, "contents")["content"]
                   if item["type"] == "notebook")
    if prefixes:
        names = [name for name in names if any(name.startswith(prefix) for prefix in prefixes)]
    return names


def stored_outputs(base_url: str, token: str, name: str) -> dict:
    """What the notebook file stores: players (outputs and widget state), widgets (with their text fallbacks),
    code cells; and whether the server marks every code cell trusted."""
    model = api_get(base_url, token, "contents/" + urllib.parse.quote(name))
    players, fallbacks, code_cells, trusted = 0, [], 0, []
    for cell in model["content"]["cells"]:
        if cell["cell_type"] != "code":
            continue
        code_cells += 1
        trusted.append(cell["metadata"].get("trusted"))
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            players += str(data.get("text/html", "")).count("data:audio/wav")
            if WIDGET_MIME in data:
                fallbacks.append(str(data.get("text/plain", "")).split("(")[0] + "(")
    # An ipywidgets Output widget's stored state can hold a player too (lesson 04's slider plays its mix).
    players += json.dumps(model["content"]["metadata"].get("widgets", {})).count("data:audio/wav")
    return {"players": players, "widgets": len(fallbacks), "fallbacks": fallbacks, "code_cells": code_cells,
            "server_trusted": all(trusted)}


def open_lesson(page, base_url: str, token: str, name: str) -> None:
    """Open ``name`` in a workspace of its own (no other tabs restored) and wait for its cells to render."""
    workspace = "check-" + name.split("_")[0]
    page.goto(f"{base_url}/lab/workspaces/{workspace}/tree/{urllib.parse.quote(name)}?reset&token={token}")
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
    page.wait_for_timeout(1500)


def render_all_cells(page, expected_audio: int, expected_widgets: int, timeout_s: float = 60) -> None:
    """Scroll the notebook to its end and back so that every cell is rendered (JupyterLab renders lazily)."""
    deadline = time.monotonic() + timeout_s
    while True:
        page.evaluate("""() => { const n = document.querySelector('.jp-NotebookPanel .jp-WindowedPanel-outer')
                                          || document.querySelector('.jp-NotebookPanel .jp-Notebook');
                                 n.scrollTop = n.scrollHeight; }""")
        page.wait_for_timeout(500)
        audio = page.locator(".jp-NotebookPanel .jp-OutputArea-output audio").count()
        widgets = page.locator(".jp-NotebookPanel .jp-OutputArea-output .jupyter-widgets").count()
        if (audio >= expected_audio and widgets >= expected_widgets) or time.monotonic() > deadline:
            break


def check_lesson(page, base_url: str, token: str, name: str, shots: Path | None) -> dict:
    """Open one lesson and probe its players and widgets; the result as a dict."""
    stored = stored_outputs(base_url, token, name)
    open_lesson(page, base_url, token, name)
    render_all_cells(page, stored["players"], stored["widgets"])
    page.wait_for_timeout(1000)
    audios = page.locator(".jp-NotebookPanel .jp-OutputArea-output audio")
    probes = [audios.nth(i).evaluate(AUDIO_PROBE_JS) for i in range(audios.count())]
    widgets = page.evaluate(WIDGETS_PROBE_JS, [f for f in stored["fallbacks"] if f != "("])
    result = {"lesson": name, "server_trusted": stored["server_trusted"], "stored_players": stored["players"],
              "audio_elements": len(probes), "data_wav": sum(p["data_wav"] for p in probes),
              "playable": sum(p["playable"] for p in probes), "players": probes,
              "stored_widgets": stored["widgets"], "widgets_rendered": widgets["rendered"],
              "widgets_as_text": widgets["as_text"], "widget_classes": widgets["classes"]}
    if shots is not None:
        result["screenshots"] = take_screenshots(page, name, shots)
    return result


def take_screenshots(page, name: str, shots: Path) -> list[str]:
    """The first stored widget's output and the first audio player, as PNGs under ``shots``."""
    shots.mkdir(parents=True, exist_ok=True)
    stem, saved = name.split("_")[0], []
    targets = [("widget", ".jp-NotebookPanel .jp-OutputArea-output:has(.jupyter-widgets)"),
               ("audio", ".jp-NotebookPanel .jp-OutputArea-output:has(audio)")]
    for label, selector in targets:
        element = page.locator(selector).first
        if element.count():
            element.scroll_into_view_if_needed()
            page.wait_for_timeout(500)
            path = shots / f"{stem}_{label}.png"
            element.screenshot(path=str(path))
            saved.append(str(path))
    return saved


def time_run_all(page, base_url: str, token: str, name: str, timeout_s: float) -> dict:
    """Run > Restart Kernel and Run All Cells..., timed until the kernel is idle and every code cell has run."""
    stored = stored_outputs(base_url, token, name)
    open_lesson(page, base_url, token, name)
    page.wait_for_function("() => { const i = document.querySelector('.jp-Notebook-ExecutionIndicator');"
                           " return i && i.getAttribute('data-status') === 'idle'; }", timeout=120_000)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Restart Kernel and Run All Cells").first.click()
    accept = page.locator(".jp-Dialog .jp-mod-accept")
    accept.wait_for(timeout=30_000)
    accept.click()
    start = time.monotonic()
    # The stored prompts already read [1]..[N]: first wait for the run to queue cells ([*]), then for it to end.
    page.wait_for_function("() => Array.from(document.querySelectorAll('.jp-NotebookPanel .jp-InputArea-prompt'))"
                           ".some(p => p.textContent.trim() === '[*]:')", timeout=180_000, polling=100)
    done, state, idle_since = False, {}, None
    while time.monotonic() - start < timeout_s:
        state = page.evaluate(RUN_STATE_JS)
        queued = "[*]:" in state["prompts"]
        counted = sum(1 for p in state["prompts"] if p[1:-2].isdigit())
        idle = state["indicator"] == "idle" and not queued
        if idle and (counted == stored["code_cells"] or state["errors"]):
            done = True
            break
        idle_since = (idle_since or time.monotonic()) if idle else None
        if idle_since and time.monotonic() - idle_since > 20:
            break                                   # idle, nothing queued, yet cells without a count
        page.wait_for_timeout(250)
    seconds = time.monotonic() - start
    return {"lesson": name, "seconds": round(seconds, 1), "completed": done and not state.get("errors"),
            "errors": state.get("errors"), "code_cells": stored["code_cells"],
            "counted": sum(1 for p in state.get("prompts", []) if p[1:-2].isdigit())}


def shut_down_sessions(base_url: str, token: str, name: str) -> None:
    """Shut down the kernels that opening ``name`` started, so that lessons do not pile up kernels."""
    for session in api_get(base_url, token, "sessions"):
        if session.get("path", "").endswith(name):
            api_delete(base_url, token, f"sessions/{session['id']}")


def report(result: dict) -> bool:
    """Print one lesson's line; True when its stored players all play and its stored widgets render."""
    players_ok = result["playable"] == result["stored_players"] == result["data_wav"]
    widgets_ok = result["widgets_rendered"] >= result["stored_widgets"] and not result["widgets_as_text"]
    print(f"{result['lesson']}: trusted by server {result['server_trusted']}; players stored "
          f"{result['stored_players']}, <audio> {result['audio_elements']}, data:audio/wav {result['data_wav']}, "
          f"playable {result['playable']}; widgets stored {result['stored_widgets']}, rendered "
          f"{result['widgets_rendered']}, as text {result['widgets_as_text']} -> "
          f"{'ok' if players_ok and widgets_ok else 'FAIL'}", flush=True)
    for number, probe in enumerate(result["players"], start=1):
        if not probe["playable"]:
            print(f"    player {number}: {probe}", flush=True)
    return players_ok and widgets_ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8899", help="the running JupyterLab")
    parser.add_argument("--token", default="check", help="the server's token")
    parser.add_argument("--lessons", nargs="*", help="name prefixes of the lessons to open (default: all)")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="the Chromium executable")
    parser.add_argument("--screenshots", type=Path, help="folder for PNGs of each lesson's first widget and player")
    parser.add_argument("--run-all", action="store_true", help="time Restart Kernel and Run All instead")
    parser.add_argument("--run-timeout", type=float, default=900, help="seconds allowed per timed lesson")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    args = parser.parse_args(argv)
    base_url = args.base_url.rstrip("/")

    from playwright.sync_api import sync_playwright     # here: --help works without Playwright

    lessons = list_lessons(base_url, args.token, args.lessons)
    if not lessons:
        print("no notebooks matched", file=sys.stderr)
        return 2
    results, all_ok = [], True
    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        browser = playwright.chromium.launch_persistent_context(
            profile, executable_path=args.chromium, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1400, "height": 1000})
        page = browser.new_page()
        page.on("dialog", lambda dialog: dialog.accept())       # "leave the page?" after a timed run
        for name in lessons:
            try:
                if args.run_all:
                    result = time_run_all(page, base_url, args.token, name, args.run_timeout)
                    print(f"{name}: Restart Kernel and Run All: {result['seconds']} s "
                          f"({'completed' if result['completed'] else 'NOT completed'}: {result['counted']}/"
                          f"{result['code_cells']} code cells counted, {result['errors']} errors)", flush=True)
                    all_ok &= result["completed"]
                else:
                    result = check_lesson(page, base_url, args.token, name, args.screenshots)
                    all_ok &= report(result)
            except Exception as err:                    # a page that never rendered: say which, go on
                print(f"{name}: could not be checked: {type(err).__name__}: {err}", flush=True)
                result, all_ok = {"lesson": name, "error": str(err)}, False
            finally:
                page.goto("about:blank")
                shut_down_sessions(base_url, args.token, name)
            results.append(result)
        browser.close()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
